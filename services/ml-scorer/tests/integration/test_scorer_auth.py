"""ml-scorer's gRPC server refuses calls without a valid token for its audience, and
serves a user's trades only to a token acting for that user (RFC 8693 delegation)."""

from __future__ import annotations

import grpc
import pytest

from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as pb_grpc
from bsopt_common.settings import ML_SCORER_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.tokens import refusal_tokens
from bsopt_scorer.bootstrap import serve
from bsopt_scorer.config import ScorerSettings


@pytest.fixture(scope="module")
def scorer(service_database_urls, kafka_bootstrap, test_issuer):
    port = free_port()
    settings = ScorerSettings(
        database_url=service_database_urls["ml-scorer"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "ml-scorer"))
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


def list_trades(target: str, token: str | None) -> pb.ListScoredTradesResponse:
    with grpc.insecure_channel(target) as ch:
        md = (("authorization", f"Bearer {token}"),) if token else ()
        return pb_grpc.MlScorerServiceStub(ch).ListScoredTrades(pb.ListScoredTradesRequest(),
                                                                 metadata=md, timeout=10)


@pytest.mark.parametrize("kind", ["no-token", "wrong-aud", "expired", "unknown-key"])
def test_refuses(scorer, test_issuer, kind):
    token = refusal_tokens(test_issuer, ML_SCORER_AUDIENCE, "scorer:read")[kind]
    with pytest.raises(grpc.RpcError) as err:
        list_trades(scorer, token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_valid_token_without_scope_is_permission_denied(scorer, test_issuer):
    with pytest.raises(grpc.RpcError) as err:
        list_trades(scorer, test_issuer.token(aud=ML_SCORER_AUDIENCE, scope="broker:orders"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_delegated_token_is_served(scorer, test_issuer):
    token = delegated_token(test_issuer, user="u1", aud=ML_SCORER_AUDIENCE, scope="scorer:read")
    assert list(list_trades(scorer, token).trades) == []


def test_service_token_reads_no_users_trades(scorer, test_issuer):
    """Attack replay (issue 6 §2): a service's own client-credentials token with the scope
    no longer reads a user's data; the user comes only from a delegated token."""
    service_token = test_issuer.token(aud=ML_SCORER_AUDIENCE, scope="scorer:read", sub="digest-worker",
                                      client_id="digest-worker")
    with pytest.raises(grpc.RpcError) as err:
        list_trades(scorer, service_token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

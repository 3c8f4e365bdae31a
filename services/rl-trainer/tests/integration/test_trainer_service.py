"""rl-trainer's gRPC server: token refusals, and bad job specs answered with
INVALID_ARGUMENT before anything is queued."""

from __future__ import annotations

import grpc
import pytest

from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as pb_grpc
from bsopt_common.settings import RL_TRAINER_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.tokens import refusal_tokens
from bsopt_trainer.bootstrap import serve
from bsopt_trainer.config import TrainerSettings

SCOPES = "trainer:jobs.read trainer:jobs.write"


@pytest.fixture(scope="module")
def trainer(service_database_urls, kafka_bootstrap, test_issuer, tmp_path_factory):
    port = free_port()
    settings = TrainerSettings(
        database_url=service_database_urls["rl-trainer"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "rl-trainer"),
        broker_gateway_target=f"127.0.0.1:{free_port()}", artifacts_dir=tmp_path_factory.mktemp("artifacts"))
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


def call(target: str, method: str, request, token: str | None):
    with grpc.insecure_channel(target) as ch:
        md = (("authorization", f"Bearer {token}"),) if token else ()
        return getattr(pb_grpc.RlTrainerServiceStub(ch), method)(request, metadata=md, timeout=30)


@pytest.mark.parametrize("kind", ["no-token", "wrong-aud", "expired", "unknown-key"])
def test_refuses(trainer, test_issuer, kind):
    token = refusal_tokens(test_issuer, RL_TRAINER_AUDIENCE, SCOPES)[kind]
    with pytest.raises(grpc.RpcError) as err:
        call(trainer, "GetTrainingJob", pb.GetTrainingJobRequest(job_id="x"), token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def as_user(issuer, user: str) -> str:
    """resource-api's token acting for ``user`` (RFC 8693 exchange)."""
    return delegated_token(issuer, user=user, aud=RL_TRAINER_AUDIENCE, scope=SCOPES)


def spec(**kw) -> pb.TrainingJobSpec:
    base = dict(symbol="GOOGL", train_start="2009-05-22", train_end="2016-11-30", test_start="2017-01-03",
                test_end="2018-08-29", window_size=16, total_timesteps=1024, transaction_cost_bps=10)
    return pb.TrainingJobSpec(**{**base, **kw})


@pytest.mark.parametrize("bad, message", [
    (dict(test_start="2016-12-05"), "window"),          # fewer than 16 bars of gap: look-ahead risk
    (dict(train_end="2017-02-01"), "after train_end"),  # overlapping windows
    (dict(test_end="2030-01-01"), "2030"),              # outside the data
    (dict(train_start="22/05/2009"), "ISO date"),
    (dict(symbol="NOPE"), "NOPE"),
])
def test_bad_specs_are_invalid_argument(trainer, test_issuer, bad, message):
    with pytest.raises(grpc.RpcError) as err:
        call(trainer, "SubmitTrainingJob", pb.SubmitTrainingJobRequest(spec=spec(**bad)), as_user(test_issuer, "u1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_unset_optional_fields_take_the_domain_defaults_and_zero_stays_zero(trainer, test_issuer):
    request = spec(transaction_cost_bps=0)
    request.ClearField("window_size")
    job = call(trainer, "SubmitTrainingJob", pb.SubmitTrainingJobRequest(spec=request),
               as_user(test_issuer, "u-defaults"))
    assert job.spec.window_size == 16  # unset: the domain's default
    assert job.spec.HasField("transaction_cost_bps") and job.spec.transaction_cost_bps == 0  # not the default 10


def test_other_users_job_is_not_found(trainer, test_issuer):
    job = call(trainer, "SubmitTrainingJob", pb.SubmitTrainingJobRequest(spec=spec()), as_user(test_issuer, "owner"))
    assert job.status in (pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_RUNNING)
    owner = as_user(test_issuer, "owner")
    assert call(trainer, "GetTrainingJob", pb.GetTrainingJobRequest(job_id=job.job_id), owner).job_id == job.job_id
    with pytest.raises(grpc.RpcError) as err:
        call(trainer, "GetTrainingJob", pb.GetTrainingJobRequest(job_id=job.job_id), as_user(test_issuer, "intruder"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_service_token_acts_for_no_user(trainer, test_issuer):
    """Attack replay (issue 6 §2): a service's own token with the trainer scopes can
    neither submit a job for a user nor read one; a user comes only from a delegated token."""
    service_token = test_issuer.token(aud=RL_TRAINER_AUDIENCE, scope=SCOPES, sub="digest-worker",
                                      client_id="digest-worker")
    job = call(trainer, "SubmitTrainingJob", pb.SubmitTrainingJobRequest(spec=spec()), as_user(test_issuer, "owner-2"))
    for method, request in (("SubmitTrainingJob", pb.SubmitTrainingJobRequest(spec=spec())),
                            ("GetTrainingJob", pb.GetTrainingJobRequest(job_id=job.job_id)),
                            ("CancelTrainingJob", pb.CancelTrainingJobRequest(job_id=job.job_id))):
        with pytest.raises(grpc.RpcError) as err:
            call(trainer, method, request, service_token)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method

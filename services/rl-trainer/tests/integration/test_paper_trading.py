"""A trained agent paper-trades through a real broker-gateway: a tiny job trains for real,
then RunPaperTrading against another user's account is NOT_FOUND (the gateway's named
error travels through rl-trainer as itself, not as INTERNAL), and against the user's own
account it trades and reports its final equity as Money. rl-trainer reaches
broker-gateway only with the user's delegated token exchanged again (RFC 8693): a run can
touch no account but its owner's."""

from __future__ import annotations

import time

import grpc
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as pb_grpc
from bsopt_broker.bootstrap import serve as serve_broker
from bsopt_broker.config import BrokerSettings
from bsopt_common import codec
from bsopt_common.money import Money
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE, RL_TRAINER_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_trainer.bootstrap import serve as serve_trainer
from bsopt_trainer.config import TrainerSettings

SCOPES = "trainer:jobs.read trainer:jobs.write"


@pytest.fixture(scope="module")
def stack(service_database_urls, kafka_bootstrap, test_issuer, tmp_path_factory):
    common = dict(kafka_bootstrap_servers=kafka_bootstrap)
    broker_port, trainer_port = free_port(), free_port()
    broker = BrokerSettings(port=broker_port, **service_identity(test_issuer, "broker-gateway"),
                            database_url=service_database_urls["broker-gateway"], **common)
    trainer = TrainerSettings(port=trainer_port, **service_identity(test_issuer, "rl-trainer"),
                              database_url=service_database_urls["rl-trainer"],
                              broker_gateway_target=f"127.0.0.1:{broker_port}",
                              artifacts_dir=tmp_path_factory.mktemp("artifacts"), **common)
    with ServiceThread(lambda stop: serve_broker(broker, stop), port=broker_port), \
            ServiceThread(lambda stop: serve_trainer(trainer, stop), port=trainer_port):
        yield f"127.0.0.1:{broker_port}", f"127.0.0.1:{trainer_port}"


def _call(target: str, stub_type, method: str, request, token: str, timeout: float = 120):
    with grpc.insecure_channel(target) as ch:
        return getattr(stub_type(ch), method)(request, metadata=(("authorization", f"Bearer {token}"),),
                                              timeout=timeout)


def test_paper_trading_on_another_users_account_is_not_found(stack, test_issuer):
    broker, trainer = stack
    # what resource-api presents acting for alice / bob
    trainer_token = delegated_token(test_issuer, user="alice", aud=RL_TRAINER_AUDIENCE, scope=SCOPES)
    alice_broker = delegated_token(test_issuer, user="alice", aud=BROKER_GATEWAY_AUDIENCE, scope="broker:accounts")
    bob_broker = delegated_token(test_issuer, user="bob", aud=BROKER_GATEWAY_AUDIENCE, scope="broker:accounts")
    spec = pb.TrainingJobSpec(symbol="GOOGL", train_start="2009-05-22", train_end="2016-11-30",
                              test_start="2017-01-03", test_end="2017-03-31", total_timesteps=1024, seed=3)
    job = _call(trainer, pb_grpc.RlTrainerServiceStub, "SubmitTrainingJob",
                pb.SubmitTrainingJobRequest(spec=spec), trainer_token)
    deadline = time.monotonic() + 180
    while job.status not in (pb.JOB_STATUS_SUCCEEDED, pb.JOB_STATUS_FAILED):
        assert time.monotonic() < deadline, "the tiny training job did not finish"
        time.sleep(0.5)
        job = _call(trainer, pb_grpc.RlTrainerServiceStub, "GetTrainingJob",
                    pb.GetTrainingJobRequest(job_id=job.job_id), trainer_token)
    assert job.status == pb.JOB_STATUS_SUCCEEDED, job.error

    cash = codec.money_pb(Money.of("50000", "USD"))
    bobs = _call(broker, bpb_grpc.BrokerGatewayServiceStub, "CreateAccount",
                 bpb.CreateAccountRequest(initial_cash=cash), bob_broker)
    exchanges_before = test_issuer.exchange_requests
    with pytest.raises(grpc.RpcError) as err:
        _call(trainer, pb_grpc.RlTrainerServiceStub, "RunPaperTrading",
              pb.RunPaperTradingRequest(job_id=job.job_id, account_id=bobs.account_id),
              trainer_token)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert bobs.account_id in err.value.details()

    alices = _call(broker, bpb_grpc.BrokerGatewayServiceStub, "CreateAccount",
                   bpb.CreateAccountRequest(initial_cash=cash), alice_broker)
    run = _call(trainer, pb_grpc.RlTrainerServiceStub, "RunPaperTrading",
                pb.RunPaperTradingRequest(job_id=job.job_id, account_id=alices.account_id),
                trainer_token)
    assert run.fills == run.orders - run.rejected
    equity = codec.money_from_pb(run, "final_equity")
    assert equity.currency == "USD" and equity.is_positive()
    # rl-trainer exchanged alice's token for broker-gateway once (cached across both runs' calls)
    assert test_issuer.exchange_requests - exchanges_before == 1
    account = _call(broker, bpb_grpc.BrokerGatewayServiceStub, "GetAccount",
                    bpb.GetAccountRequest(account_id=alices.account_id), alice_broker)
    assert account.user_id == "alice"
    assert run.fills == 0 or codec.money_from_pb(account, "cash") != Money.of("50000", "USD")  # it traded there

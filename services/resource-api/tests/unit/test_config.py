"""Settings come from the environment with the BSOPT_API_ prefix."""

from __future__ import annotations

from bsopt_api.config import ApiSettings


def test_defaults(monkeypatch):
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    s = ApiSettings(_env_file=None)
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert (s.service_name, s.client_id) == ("resource-api", "resource-api")
    assert (s.broker_gateway_target, s.ml_scorer_target, s.rl_trainer_target) == (
        "127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053")
    assert s.paper_trading_timeout_seconds >= 300
    assert s.database_url is None


def test_prefixed_environment_and_shared_unprefixed_urls(monkeypatch):
    monkeypatch.setenv("BSOPT_API_PORT", "8080")
    monkeypatch.setenv("BSOPT_API_RL_TRAINER_TARGET", "rl-trainer:50053")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/bsopt")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("PORT", "1")  # unprefixed names other than the shared two are ignored
    s = ApiSettings(_env_file=None)
    assert (s.port, s.rl_trainer_target) == (8080, "rl-trainer:50053")
    assert (s.database_url, s.kafka_bootstrap_servers) == ("postgresql://u@db/bsopt", "kafka:9092")

"""The local stack: embedded infrastructure plus the six services, each its own process.

``Stack.start()``:

1. Postgres: ``DATABASE_URL`` if set, else an embedded server (the ``pgserver`` wheel)
   with its data under ``<state_dir>/postgres``, and a ``bsopt`` database in it;
2. Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else the embedded Kafka-compatible broker
   (Tansu, in-memory: topics and offsets start empty on every start) as a child process
   on a free port, logging to ``<state_dir>/logs/kafka.log``;
3. each service's key pair under ``<state_dir>/keys`` (created once), auth-server migrations
   and dev seed (clients with those public keys, demo user);
4. Alpaca: the accounts file ``<state_dir>/alpaca/accounts.yaml`` with one account,
   :data:`ALPACA_ACCOUNT`, owned by the demo user. With ``BSOPT_ALPACA_API_KEY_ID`` and
   ``BSOPT_ALPACA_API_SECRET_KEY`` in the environment it is the real Alpaca account of
   those keys (read by broker-gateway from its environment, never written to disk; no
   ``base_url``); without them, a local stand-in of Alpaca's API
   (:mod:`bsopt_cli.alpaca_dev`) runs as a child process on ``ports.alpaca`` with a paper
   account (``PK...`` key id, random secret in ``<state_dir>/alpaca/standin-secret``);
   ml-scorer gets the same source as its market data for fills the bundled bars do not
   cover (:meth:`Stack.scorer_market_data_env`): the stand-in's daily bars with its paper
   account's key id and secret file, or Alpaca's Market Data API with the keys given;
5. the six services as child processes (broker-gateway with ``BSOPT_BROKER_ACCOUNTS_FILE``);
   each service runs its own migrations on start;
6. waits until every service answers (HTTP metadata, gRPC health).

``Stack.stop()`` sends SIGTERM to every child in reverse start order, waits for them to
drain, and kills what is left; children also get SIGTERM if this process dies
(``PR_SET_PDEATHSIG``), so no orphan survives the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url

DEMO_USER = ("demo", "demo-password")
#: The Alpaca account of the dev stack's accounts file (its account id in the API).
ALPACA_ACCOUNT = "demo-alpaca"
#: A real Alpaca account's keys, when given (both or neither).
ALPACA_KEY_ID_ENV = "BSOPT_ALPACA_API_KEY_ID"
ALPACA_SECRET_ENV = "BSOPT_ALPACA_API_SECRET_KEY"
#: The stand-in's key id: ``PK`` (paper) and 20 characters, as Alpaca's paper key ids.
STANDIN_KEY_ID = "PKDEVSTANDIN00000001"
STANDIN_CASH = "100000"
#: bsopt's OAuth client id at the local stand-in (``POST /v1/brokers/alpaca/connect`` offline).
STANDIN_OAUTH_CLIENT_ID = "bsopt-dev"
#: Confidential clients seeded by ``bsopt_auth seed-dev`` (dev secrets only).
SERVICE_CLIENTS = ("resource-api", "broker-gateway", "rl-trainer", "ml-scorer", "digest-worker", "auth-server")


class StackError(RuntimeError):
    """The stack could not start; the message names the service and its log file."""


@dataclass
class Ports:
    auth: int = 9000
    api: int = 8000
    broker: int = 50051
    scorer: int = 50052
    trainer: int = 50053
    digest: int = 50054
    alpaca: int = 8090
    """The local Alpaca stand-in (HTTP), when no Alpaca keys are given."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path


def _set_pdeathsig() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Stack:
    state_dir: Path = Path(".state")
    ports: Ports = field(default_factory=Ports)
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    log_level: str = "INFO"
    children: list[Child] = field(default_factory=list)
    alpaca_standin: bool = False
    """True once :meth:`start` runs the local Alpaca stand-in (no Alpaca keys given)."""
    _pg: object | None = None
    _embedded_kafka: bool = False

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.ports.auth}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def alpaca_url(self) -> str:
        """The local Alpaca stand-in's base URL."""
        return f"http://127.0.0.1:{self.ports.alpaca}"

    @property
    def accounts_file(self) -> Path:
        """broker-gateway's Alpaca accounts file (``BSOPT_BROKER_ACCOUNTS_FILE``)."""
        return self.state_dir / "alpaca" / "accounts.yaml"

    # --- infrastructure --------------------------------------------------------------
    def _start_postgres(self) -> str:
        if url := (self.database_url or os.environ.get("DATABASE_URL")):
            return url
        from bsopt_common.embedded.postgres import EmbeddedPostgres

        pg = EmbeddedPostgres.start(self.state_dir / "postgres")
        self._pg = pg
        admin = make_url(pg.url)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bsopt'").fetchone() is None:
                conn.execute('CREATE DATABASE "bsopt"')
        return admin.set(database="bsopt").render_as_string(hide_password=False)

    def _start_kafka(self) -> str:
        if bootstrap := (self.kafka_bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
            return bootstrap
        from bsopt_common.embedded.kafka import BrokerStartError, EmbeddedKafka

        # The broker binary itself is the child (PR_SET_PDEATHSIG set by EmbeddedKafka);
        # stop() terminates it after the services, like any other child.
        log_path = self.log_dir / "kafka.log"
        kafka = EmbeddedKafka(log_path=log_path)
        try:
            bootstrap = kafka.start()
        except BrokerStartError as exc:
            raise StackError(f"embedded Kafka did not start: {exc}; see {log_path}") from None
        self.children.append(Child("kafka", kafka.process, log_path))
        self._embedded_kafka = True
        return bootstrap

    # --- Alpaca ------------------------------------------------------------------------
    @staticmethod
    def alpaca_keys_given() -> bool:
        """True when a real Alpaca account's keys are in the environment (both of them)."""
        given = [name for name in (ALPACA_KEY_ID_ENV, ALPACA_SECRET_ENV) if os.environ.get(name)]
        if len(given) == 1:
            missing = ALPACA_SECRET_ENV if given[0] == ALPACA_KEY_ID_ENV else ALPACA_KEY_ID_ENV
            raise StackError(f"{given[0]} is set but {missing} is not: give both keys of the Alpaca account, "
                             "or neither to use the local stand-in")
        return len(given) == 2

    @staticmethod
    def demo_user_id(auth_database_url: str) -> str:
        """The seeded demo user's id: the ``sub`` of its tokens, which an accounts file's
        ``owner`` must name."""
        from bsopt_common.db import create_db_engine

        engine = create_db_engine(auth_database_url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as conn:
                user_id = conn.execute(text("SELECT id::text FROM auth.users WHERE username = :name"),
                                       {"name": DEMO_USER[0]}).scalar_one_or_none()
        finally:
            engine.dispose()
        if user_id is None:
            raise StackError(f"the demo user {DEMO_USER[0]!r} is not in auth.users after seed-dev")
        return str(user_id)

    def write_alpaca_accounts(self, owner: str, *, standin: bool) -> Path:
        """Write :attr:`accounts_file` (YAML; mode 0600) with the one account
        :data:`ALPACA_ACCOUNT` owned by ``owner``: the local stand-in's (``standin``), or
        the real one whose keys broker-gateway reads from the environment."""
        folder = self.accounts_file.parent
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        entry: dict[str, object] = {"name": ALPACA_ACCOUNT, "broker": "alpaca", "owner": owner}
        if standin:
            secret_file = folder / "standin-secret"
            secret_file.touch(mode=0o600)
            secret_file.chmod(0o600)
            secret_file.write_text(secrets.token_urlsafe(32) + "\n")
            entry |= {"api_key_id": STANDIN_KEY_ID, "api_secret_key_file": secret_file.name,
                      "base_url": self.alpaca_url}
            origin = f"the local Alpaca stand-in ({self.alpaca_url})"
        else:
            entry |= {"api_key_id_env": ALPACA_KEY_ID_ENV, "api_secret_key_env": ALPACA_SECRET_ENV}
            origin = f"the Alpaca account of {ALPACA_KEY_ID_ENV} / {ALPACA_SECRET_ENV}"
        # JSON scalars are YAML scalars: no YAML writer needed
        lines = [f"# Written by the bsopt dev stack on every start: {origin}.", "accounts:"]
        lines += [f"  {'-' if i == 0 else ' '} {key}: {json.dumps(value)}"
                  for i, (key, value) in enumerate(entry.items())]
        self.accounts_file.touch(mode=0o600)
        self.accounts_file.chmod(0o600)
        self.accounts_file.write_text("\n".join(lines) + "\n")
        return self.accounts_file

    def standin_oauth(self) -> dict[str, str]:
        """bsopt's OAuth client at the local stand-in (a fresh secret per start, in the
        state dir): broker-gateway's ``BSOPT_BROKER_ALPACA_*`` settings for it, so
        ``POST /v1/brokers/alpaca/connect`` works offline (the stand-in approves at once)."""
        folder = self.accounts_file.parent
        folder.mkdir(parents=True, exist_ok=True)
        secret_file = folder / "oauth-client-secret"
        secret_file.touch(mode=0o600)
        secret_file.chmod(0o600)
        secret_file.write_text(secrets.token_urlsafe(32) + "\n")
        return {"BSOPT_BROKER_ALPACA_OAUTH_CLIENT_ID": STANDIN_OAUTH_CLIENT_ID,
                "BSOPT_BROKER_ALPACA_OAUTH_CLIENT_SECRET": secret_file.read_text().strip(),
                "BSOPT_BROKER_ALPACA_OAUTH_REDIRECT_URI": self.api_url + "/v1/brokers/alpaca/callback",
                "BSOPT_BROKER_ALPACA_OAUTH_AUTHORIZE_URL": self.alpaca_url + "/oauth/authorize",
                "BSOPT_BROKER_ALPACA_OAUTH_TOKEN_URL": self.alpaca_url + "/oauth/token",
                "BSOPT_BROKER_ALPACA_TRADING_BASE_URL": self.alpaca_url}

    def scorer_market_data_env(self, *, standin: bool) -> dict[str, str]:
        """ml-scorer's ``BSOPT_SCORER_ALPACA_DATA_*`` settings: the local stand-in's daily
        bars (its paper account's key id, the secret file :meth:`write_alpaca_accounts`
        wrote, :attr:`alpaca_url`), or Alpaca's Market Data API with the keys of
        ``BSOPT_ALPACA_API_KEY_ID`` / ``BSOPT_ALPACA_API_SECRET_KEY`` (from the environment,
        never written to disk)."""
        if standin:
            return {"BSOPT_SCORER_ALPACA_DATA_KEY_ID": STANDIN_KEY_ID,
                    "BSOPT_SCORER_ALPACA_DATA_SECRET_KEY_FILE":
                        str((self.accounts_file.parent / "standin-secret").resolve()),
                    "BSOPT_SCORER_ALPACA_DATA_URL": self.alpaca_url}
        return {"BSOPT_SCORER_ALPACA_DATA_KEY_ID": os.environ[ALPACA_KEY_ID_ENV],
                "BSOPT_SCORER_ALPACA_DATA_SECRET_KEY": os.environ[ALPACA_SECRET_ENV]}

    def _start_alpaca(self, auth_database_url: str, timeout_seconds: float,
                      broker_env: dict[str, str] | None = None, scorer_env: dict[str, str] | None = None) -> None:
        """The accounts file; without Alpaca keys, the stand-in process, and its OAuth client
        added to ``broker_env`` (broker-gateway's environment); the market-data source of
        either added to ``scorer_env`` (ml-scorer's)."""
        standin = not self.alpaca_keys_given()
        self.write_alpaca_accounts(self.demo_user_id(auth_database_url), standin=standin)
        if scorer_env is not None:
            scorer_env.update(self.scorer_market_data_env(standin=standin))
        if not standin:
            return
        secret = (self.accounts_file.parent / "standin-secret").read_text().strip()
        oauth = self.standin_oauth()
        if broker_env is not None:
            broker_env.update(oauth)
        self._spawn("alpaca-standin", [sys.executable, "-m", "bsopt_cli.alpaca_dev", "--port", str(self.ports.alpaca),
                                       "--cash", STANDIN_CASH],
                    {"BSOPT_ALPACA_STANDIN_KEY_ID": STANDIN_KEY_ID, "BSOPT_ALPACA_STANDIN_SECRET": secret,
                     "BSOPT_ALPACA_STANDIN_OAUTH_CLIENT_ID": oauth["BSOPT_BROKER_ALPACA_OAUTH_CLIENT_ID"],
                     "BSOPT_ALPACA_STANDIN_OAUTH_CLIENT_SECRET": oauth["BSOPT_BROKER_ALPACA_OAUTH_CLIENT_SECRET"],
                     "BSOPT_ALPACA_STANDIN_OAUTH_REDIRECT_URI": oauth["BSOPT_BROKER_ALPACA_OAUTH_REDIRECT_URI"],
                     "BSOPT_LOG_LEVEL": self.log_level})
        self.alpaca_standin = True
        self._wait_http(self.alpaca_url + "/v2/account", "alpaca-standin", timeout_seconds,
                        headers={"APCA-API-KEY-ID": STANDIN_KEY_ID, "APCA-API-SECRET-KEY": secret})

    # --- services ----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def _run_once(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            rc = subprocess.call(argv, env={**os.environ, **env}, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        if rc != 0:
            raise StackError(f"{name} failed (exit {rc}); see {log_path}")

    def _database_urls(self, database_url: str) -> dict[str, str]:
        """Each service's own role (bsopt_common.db_roles) when this stack owns the database
        (embedded, or given to the Stack by a caller that may create roles); a
        ``DATABASE_URL`` from the environment is a platform's database: used as it is."""
        if self._pg is None and self.database_url is None:
            return {}
        from bsopt_common.db_roles import bootstrap_service_roles

        return bootstrap_service_roles(database_url)

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    def service_key_files(self) -> dict[str, str]:
        """``{client_id: private key file}``: each service's own key pair under
        ``<state_dir>/keys`` (created once, mode 0600; the directory 0700), with its public
        JWKS next to it as ``<client_id>.jwks.json`` for the auth-server's ``seed-dev``. A
        service signs its events and authenticates (``private_key_jwt``) with it."""
        from bsopt_common.service_keys import ensure_service_keys

        return {client: str(path) for client, path in ensure_service_keys(self.keys_dir, SERVICE_CLIENTS).items()}

    def service_env(self, database_url: str, kafka: str,
                    role_urls: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        p = self.ports
        common = {
            "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka, "BSOPT_ISSUER": self.issuer,
            "BSOPT_LOG_LEVEL": self.log_level,
        }
        if self._embedded_kafka:  # Tansu answers a group join after ~session/2: keep it short
            from bsopt_common.embedded.kafka import FAST_FETCH_MAX_WAIT_MS, FAST_GROUP_SETTINGS

            common["KAFKA_SESSION_TIMEOUT_MS"] = str(FAST_GROUP_SETTINGS["session_timeout_ms"])
            common["KAFKA_HEARTBEAT_INTERVAL_MS"] = str(FAST_GROUP_SETTINGS["heartbeat_interval_ms"])
            common["KAFKA_FETCH_MAX_WAIT_MS"] = str(FAST_FETCH_MAX_WAIT_MS)
        keys = self.service_key_files()
        envs = {
            # resource-api's Swagger UI exchanges its code at the token endpoint (CORS)
            "auth-server": {**common, "BSOPT_AUTH_PORT": str(p.auth), "BSOPT_AUTH_ISSUER": self.issuer,
                            "BSOPT_AUTH_TOKEN_ENDPOINT_CORS_ORIGINS": self.api_url,
                            # seed-dev registers each service's public keys (private_key_jwt)
                            "BSOPT_AUTH_SEED_CLIENT_KEYS_DIR": str(self.keys_dir),
                            # signs auth.audit.v1 (registered as client auth-server at start)
                            "BSOPT_AUTH_SIGNING_KEY_FILE": keys["auth-server"]},
            "broker-gateway": {**common, "BSOPT_BROKER_PORT": str(p.broker),
                               "BSOPT_BROKER_ACCOUNTS_FILE": str(self.accounts_file.resolve()),
                               "BSOPT_BROKER_SIGNING_KEY_FILE": keys["broker-gateway"]},
            "ml-scorer": {**common, "BSOPT_SCORER_PORT": str(p.scorer),
                          "BSOPT_SCORER_SIGNING_KEY_FILE": keys["ml-scorer"]},
            "rl-trainer": {**common, "BSOPT_TRAINER_PORT": str(p.trainer),
                           "BSOPT_TRAINER_SIGNING_KEY_FILE": keys["rl-trainer"],
                           "BSOPT_TRAINER_BROKER_GATEWAY_TARGET": f"127.0.0.1:{p.broker}",
                           "BSOPT_TRAINER_ARTIFACTS_DIR": str((self.state_dir / "artifacts").resolve())},
            "digest-worker": {**common, "BSOPT_DIGEST_HEALTH_PORT": str(p.digest),
                              "BSOPT_DIGEST_SIGNING_KEY_FILE": keys["digest-worker"]},
            "resource-api": {**common, "BSOPT_API_PORT": str(p.api),
                             "BSOPT_API_SIGNING_KEY_FILE": keys["resource-api"],
                             "BSOPT_API_BROKER_GATEWAY_TARGET": f"127.0.0.1:{p.broker}",
                             "BSOPT_API_ML_SCORER_TARGET": f"127.0.0.1:{p.scorer}",
                             "BSOPT_API_RL_TRAINER_TARGET": f"127.0.0.1:{p.trainer}"},
        }
        for service, url in (role_urls or {}).items():  # each service as its own database role
            envs[service]["DATABASE_URL"] = url
        return envs

    def start(self, timeout_seconds: float = 120.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._check_ports_free()
        try:
            database_url = self._start_postgres()
            kafka = self._start_kafka()
            envs = self.service_env(database_url, kafka, self._database_urls(database_url))
            py = sys.executable
            self._run_once("auth-server-migrate", [py, "-m", "bsopt_auth", "migrate"], envs["auth-server"])
            self._run_once("auth-server-seed", [py, "-m", "bsopt_auth", "seed-dev"], envs["auth-server"])
            self._start_alpaca(envs["auth-server"]["DATABASE_URL"], timeout_seconds, envs["broker-gateway"],
                               envs["ml-scorer"])
            self._spawn("auth-server", [py, "-m", "bsopt_auth", "serve"], envs["auth-server"])
            self._wait_http(self.issuer + "/.well-known/openid-configuration", "auth-server", timeout_seconds)
            modules = {"broker-gateway": "bsopt_broker", "ml-scorer": "bsopt_scorer", "rl-trainer": "bsopt_trainer",
                       "digest-worker": "bsopt_digest", "resource-api": "bsopt_api"}
            for name, module in modules.items():
                self._spawn(name, [py, "-m", module], envs[name])
            for name, port in (("broker-gateway", self.ports.broker), ("ml-scorer", self.ports.scorer),
                               ("rl-trainer", self.ports.trainer), ("digest-worker", self.ports.digest)):
                self._wait_grpc_health(name, port, timeout_seconds)
            self._wait_http(self.api_url + "/healthz", "resource-api", timeout_seconds)
        except BaseException:
            self.stop()
            raise

    def _check_ports_free(self) -> None:
        import socket

        for name, port in vars(self.ports).items():
            if name == "alpaca" and self.alpaca_keys_given():
                continue  # no stand-in
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise StackError(f"port {port} ({name}) is already in use on 127.0.0.1; is another stack running?")

    def _child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def _check_alive(self, name: str) -> None:
        child = self._child(name)
        if child.proc.poll() is not None:
            tail = child.log_path.read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited with code {child.proc.returncode}; log {child.log_path}:\n{tail}")

    def _wait_http(self, url: str, name: str, timeout_seconds: float,
                   headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            self._check_alive(name)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, headers=headers, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise StackError(f"{name} did not answer {url} within {timeout_seconds:.0f}s")

    def _wait_grpc_health(self, name: str, port: int, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._check_alive(name)
                with contextlib.suppress(grpc.RpcError):
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.2)
        raise StackError(f"{name} was not SERVING on 127.0.0.1:{port} within {timeout_seconds:.0f}s")

    def stop(self, grace_seconds: float = 20.0) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_seconds
            while child.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()
        self.alpaca_standin = False
        if self._pg is not None:
            self._pg.stop()
            self._pg = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""auth-server throughput: client_credentials grants, discovery and JWKS, against an anchor.

Starts the real auth-server (``python -m bsopt_auth serve``, its own process(es) on
127.0.0.1, a Postgres database created for the run, the dev seed: ``ml-scorer`` with its
dev secret for ``client_secret_basic``, ``digest-worker`` registered for
``private_key_jwt`` with an ES256 key made here) and the anchor: a minimal FastAPI +
uvicorn app with as many workers that parses the same form and signs an equal JWT per
request (same alg, same header and claims), and serves static documents of the same size
for discovery and JWKS. Each scenario is driven by ``wrk`` (``apt-get install wrk``) at
the given concurrency for a bounded time; every response must be 2xx. Prints req/s,
p50/p99 latency and the server/anchor req/s ratio (goal >= 0.5).

With 2 cores the load generator competes with the server for the CPU: ``wrk`` (C, 2
threads) takes about one core at these rates; the figures are what is left.

    .venv/bin/python bench/auth_grants.py [--duration 10] [--concurrency 16] [--workers N]
        [--alg RS256|ES256] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

HERE = Path(__file__).resolve().parent
SECRET_CLIENT = "ml-scorer"
JWT_CLIENT = "digest-worker"
RESOURCE = "urn:bsopt:kafka"
SCOPE = "kafka:cluster"
GRANT_BODY = f"grant_type=client_credentials&resource={RESOURCE.replace(':', '%3A')}&scope={SCOPE.replace(':', '%3A')}"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# --- the anchor: `uvicorn --app-dir bench auth_grants:anchor_app` -------------------------

_ANCHOR_ALG = os.environ.get("ANCHOR_ALG", "RS256")
_ANCHOR_ISSUER = os.environ.get("ANCHOR_ISSUER", "http://127.0.0.1:9000")
_anchor_key = RSAKey.generate_key(2048, private=True) if _ANCHOR_ALG == "RS256" else ECKey.generate_key(
    "P-256", private=True)
_anchor_kid = _anchor_key.thumbprint()
_anchor_docs: dict[str, bytes] = {}
anchor_app = FastAPI()


@anchor_app.post("/token")
async def anchor_token(request: Request) -> JSONResponse:
    form = await request.form()  # parse the same body the server gets
    iat = int(time.time())
    claims: dict[str, Any] = {"iss": _ANCHOR_ISSUER, "sub": SECRET_CLIENT, "aud": RESOURCE, "client_id": SECRET_CLIENT,
                              "scope": str(form.get("scope") or SCOPE), "iat": iat, "nbf": iat, "exp": iat + 900,
                              "jti": str(uuid.uuid4())}
    header = {"typ": "at+jwt", "alg": _ANCHOR_ALG, "kid": _anchor_kid}
    token = jwt.encode(header, claims, _anchor_key, algorithms=[_ANCHOR_ALG])
    return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 900, "scope": SCOPE},
                        headers={"Cache-Control": "no-store"})


@anchor_app.get("/static/{name}")
async def anchor_static(name: str) -> Response:
    if name not in _anchor_docs:
        _anchor_docs[name] = Path(os.environ["ANCHOR_DOCS"], name).read_bytes()
    return Response(_anchor_docs[name], media_type="application/json")


# --- the driver --------------------------------------------------------------------------

_WRK_ASSERTIONS = """
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local nthreads = tonumber(args[2])
  assertions = {}
  local n = 0
  for line in io.lines(args[1]) do
    if math.fmod(n, nthreads) == id then assertions[#assertions + 1] = line end
    n = n + 1
  end
  i = 0
end
function request()
  i = i + 1
  local body = "%s&client_id=%s&client_assertion_type=%s&client_assertion=" .. assertions[i]
  return wrk.format("POST", "/oauth2/token", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""

_WRK_POST = """
wrk.method = "POST"
wrk.body = "%s"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "%s"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_VERBOSE = False


def _wrk(url: str, script: str, args: list[str], *, duration: int, concurrency: int, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", f.name, url]
    if args:
        cmd += ["--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    if _VERBOSE:
        print(out, flush=True)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise RuntimeError(f"wrk output without {label}:\n{out}")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    assert rps is not None, out
    return {"rps": float(rps.group(1)), "p50": ms("50%"), "p99": ms("99%"),
            "bad": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(0) if errors else ""}


def _assertions(key: ECKey, audience: str, count: int) -> list[str]:
    from urllib.parse import quote

    now = int(time.time())
    header = {"alg": "ES256", "kid": key.thumbprint()}
    out = []
    for _ in range(count):
        claims = {"iss": JWT_CLIENT, "sub": JWT_CLIENT, "aud": audience, "iat": now, "exp": now + 280,
                  "jti": uuid.uuid4().hex}
        out.append(quote(jwt.encode(header, claims, key, algorithms=["ES256"]), safe=""))
    return out


def _machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                   if x.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({model}), {mem_kib / 1024 / 1024:.0f} GiB, Python {sys.version.split()[0]}"


def main() -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--verbose", action="store_true", help="print wrk's own output (latency distribution)")
    args = ap.parse_args()
    global _VERBOSE
    _VERBOSE = args.verbose
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install -y wrk")

    admin = make_url(args.database_url)
    dbname = f"bench_auth_{os.getpid()}"
    conninfo = dict(host=admin.host or "127.0.0.1", port=admin.port or 5432, user=admin.username,
                    password=admin.password, dbname=admin.database or "postgres")
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client_key = ECKey.generate_key("P-256", private=True)
        keys_dir = tmp / "keys"
        keys_dir.mkdir()
        public = {**client_key.as_dict(private=False), "kid": client_key.thumbprint(), "alg": "ES256", "use": "sig"}
        (keys_dir / f"{JWT_CLIENT}.jwks.json").write_text(json.dumps({"keys": [public]}))

        port, anchor_port = _free_port(), _free_port()
        issuer = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DATABASE_URL": admin.set(database=dbname).render_as_string(hide_password=False),
               "BSOPT_AUTH_ENVIRONMENT": "dev", "BSOPT_AUTH_ISSUER": issuer, "BSOPT_AUTH_PORT": str(port),
               "BSOPT_AUTH_HOST": "127.0.0.1", "BSOPT_AUTH_WORKERS": str(args.workers),
               "BSOPT_AUTH_SIGNING_ALG": args.alg, "BSOPT_AUTH_SEED_DEV_ON_START": "true",
               "BSOPT_AUTH_SEED_CLIENT_KEYS_DIR": str(keys_dir), "BSOPT_LOG_LEVEL": "WARNING",
               "OTEL_SDK_DISABLED": "true"}
        server_log = (tmp / "server.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "bsopt_auth", "serve"], env=env,
                                      stdout=server_log, stderr=subprocess.STDOUT))
        _wait_http(f"{issuer}/readyz", procs[-1])

        import httpx

        docs = tmp / "docs"
        docs.mkdir()
        metadata = httpx.get(f"{issuer}/.well-known/openid-configuration").content
        jwks = httpx.get(f"{issuer}/.well-known/jwks.json").content
        (docs / "metadata").write_bytes(metadata)
        (docs / "jwks").write_bytes(jwks)
        anchor_env = {**os.environ, "ANCHOR_ALG": args.alg, "ANCHOR_ISSUER": issuer, "ANCHOR_DOCS": str(docs)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "auth_grants:anchor_app", "--host", "127.0.0.1",
             "--port", str(anchor_port), "--workers", str(args.workers), "--no-access-log", "--log-level", "warning"],
            env=anchor_env))
        anchor = f"http://127.0.0.1:{anchor_port}"
        _wait_http(f"{anchor}/static/jwks", procs[-1])

        basic = "Basic " + base64.b64encode(f"{SECRET_CLIENT}:dev-{SECRET_CLIENT}-secret".encode()).decode()
        check = httpx.post(f"{issuer}/oauth2/token", content=GRANT_BODY, headers={
            "Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"})
        assert check.status_code == 200, check.text
        server_token = check.json()["access_token"]
        anchor_token_ = httpx.post(f"{anchor}/token", content=GRANT_BODY, headers={
            "Content-Type": "application/x-www-form-urlencoded"}).json()["access_token"]
        print(f"token sizes: server {len(server_token)} B, anchor {len(anchor_token_)} B ({args.alg})")

        secret_script = _WRK_POST % (GRANT_BODY, basic)
        count = 1500 * (args.duration + 5)
        print(f"signing {count} client assertions ...", flush=True)
        lines = _assertions(client_key, f"{issuer}/oauth2/token", count)
        assertion_file = tmp / "assertions.txt"
        assertion_file.write_text("\n".join(lines) + "\n")
        jwt_script = _WRK_ASSERTIONS % (GRANT_BODY, JWT_CLIENT, ASSERTION_TYPE.replace(":", "%3A"))
        probe = httpx.post(f"{issuer}/oauth2/token", content=f"{GRANT_BODY}&client_id={JWT_CLIENT}&"
                           f"client_assertion_type={ASSERTION_TYPE}&client_assertion=" + _assertions(
                               client_key, f"{issuer}/oauth2/token", 1)[0],
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert probe.status_code == 200, probe.text

        scenarios = [
            ("client_credentials, client_secret_basic", f"{issuer}/oauth2/token", secret_script, [],
             f"{anchor}/token", secret_script, []),
            ("client_credentials, private_key_jwt", f"{issuer}/oauth2/token", jwt_script,
             [str(assertion_file), str(args.wrk_threads)], f"{anchor}/token", secret_script, []),
            ("discovery (openid-configuration)", f"{issuer}/.well-known/openid-configuration", "", [],
             f"{anchor}/static/metadata", "", []),
            ("JWKS", f"{issuer}/.well-known/jwks.json", "", [], f"{anchor}/static/jwks", "", []),
        ]
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        print(f"machine: {_machine()}; server workers {args.workers}, alg {args.alg}, concurrency "
              f"{args.concurrency}, {args.duration}s each, wrk -t{args.wrk_threads} on the same machine")
        print(f"{'scenario':42} {'server req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | {'anchor req/s':>12} "
              f"{'p50 ms':>7} {'p99 ms':>7} | ratio")
        failed = False
        for name, url, script, wargs, aurl, ascript, aargs in scenarios:
            if only and not any(o in name for o in only):
                continue
            warm = dict(duration=2, concurrency=args.concurrency, threads=args.wrk_threads)
            if not wargs:  # warm every worker up (the assertion scenario's assertions are single-use)
                _wrk(url, script or "", wargs, **warm)  # type: ignore[arg-type]
                _wrk(aurl, ascript or "", aargs, **warm)  # type: ignore[arg-type]
            kw = dict(duration=args.duration, concurrency=args.concurrency, threads=args.wrk_threads)
            s = _wrk(url, script or "", wargs, **kw)  # type: ignore[arg-type]
            a = _wrk(aurl, ascript or "", aargs, **kw)  # type: ignore[arg-type]
            note = ""
            if s["bad"] or a["bad"] or s["socket_errors"] or a["socket_errors"]:
                failed = True
                note = f"  !! non-2xx server {s['bad']} anchor {a['bad']} {s['socket_errors']} {a['socket_errors']}"
            print(f"{name:42} {s['rps']:12,.0f} {s['p50']:7.1f} {s['p99']:7.1f} | {a['rps']:12,.0f} "
                  f"{a['p50']:7.1f} {a['p99']:7.1f} | {s['rps'] / a['rps']:.2f}{note}", flush=True)
        if failed:
            print(f"server log: {tmp / 'server.log'}")
            sys.exit(1)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()

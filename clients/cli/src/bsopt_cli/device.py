"""Device Authorization Grant (RFC 8628) login for the public client ``bsopt-cli``: for
machines without a usable browser (SSH sessions, containers) or ``bsopt login --device``.

Steps: the device authorization request (§3.1) at the metadata's
``device_authorization_endpoint`` (RFC 8414 / RFC 8628 §4); the verification URL and
user code go to ``announce`` at once (§3.3), with ``verification_uri_complete`` (§3.3.1);
then the token endpoint is polled every ``interval`` seconds (§3.4-3.5):
``authorization_pending`` keeps polling, ``slow_down`` adds 5 s to the interval for good,
``access_denied`` and ``expired_token`` end with a clear :class:`LoginError`, as does
running past ``expires_in``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from bsopt_cli.dpop import DPoPKey, token_post
from bsopt_cli.login import CLIENT_ID, DEFAULT_SCOPE, LoginError, TokenSet, discover

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: §3.2: when the server gives no interval.
DEFAULT_INTERVAL_SECONDS = 5
#: §3.5: a slow_down adds this, seconds.
SLOW_DOWN_SECONDS = 5


def _error(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return "", resp.text[:200]
    if not isinstance(body, dict):
        return "", resp.text[:200]
    return str(body.get("error", "")), str(body.get("error_description", ""))


def device_login(
    issuer: str,
    *,
    scope: str = DEFAULT_SCOPE,
    announce: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    http: httpx.Client | None = None,
    dpop_key: DPoPKey | None = None,
) -> TokenSet:
    """Run the device flow and return the tokens (bound to ``dpop_key``, RFC 9449; default:
    a new key kept only in memory). Raises LoginError."""
    dpop_key = dpop_key if dpop_key is not None else DPoPKey.generate()
    own = http is None
    client = http or httpx.Client(timeout=10.0, follow_redirects=False)
    try:
        meta = discover(issuer, client)
        endpoint = meta.get("device_authorization_endpoint")
        if not endpoint:
            raise LoginError(f"{issuer} does not support the device flow (no device_authorization_endpoint); "
                             "log in on a machine with a browser")
        resp = client.post(endpoint, data={"client_id": CLIENT_ID, "scope": scope})
        if resp.status_code != 200:
            error, description = _error(resp)
            raise LoginError(f"device authorization request failed: HTTP {resp.status_code} {error} {description}")
        grant = resp.json()
        device_code = grant["device_code"]
        interval = float(grant.get("interval") or DEFAULT_INTERVAL_SECONDS)
        expires_in = float(grant.get("expires_in") or 600)
        deadline = clock() + expires_in

        announce(f"To sign in, open {grant['verification_uri']} in a browser on any device "
                 f"and enter the code:\n\n    {grant['user_code']}\n")
        if grant.get("verification_uri_complete"):
            announce(f"Or open {grant['verification_uri_complete']} (the code is filled in).")
        announce(f"Waiting for approval (the code expires in {int(expires_in // 60)} min {int(expires_in % 60)} s)...")

        while True:
            if clock() + interval > deadline:
                raise LoginError("the code expired before it was approved; run `bsopt login` again")
            sleep(interval)
            try:
                resp = token_post(client, meta["token_endpoint"], {
                    "grant_type": GRANT_TYPE, "device_code": device_code, "client_id": CLIENT_ID,
                }, dpop_key)
            except httpx.TransportError:
                continue  # a network blip: keep polling until the code expires
            if resp.status_code == 200:
                return TokenSet.from_response(resp.json())
            error, description = _error(resp)
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN_SECONDS
                continue
            if error == "access_denied":
                raise LoginError("the sign-in was denied in the browser")
            if error == "expired_token":
                raise LoginError("the code expired before it was approved; run `bsopt login` again")
            raise LoginError(f"device login failed: HTTP {resp.status_code} {error} {description}".rstrip())
    finally:
        if own:
            client.close()


__all__ = ["GRANT_TYPE", "device_login"]

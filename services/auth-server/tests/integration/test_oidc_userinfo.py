"""OIDC Core §5.3 UserInfo, protected by the shared RFC 9068 verifier."""

from __future__ import annotations

import uuid


async def test_userinfo_with_an_openid_token(oauth) -> None:
    body = await oauth.user_tokens(scope="openid profile")
    sub = (await oauth.decode(body["access_token"])).claims["sub"]
    for method in ("GET", "POST"):
        resp = await oauth.client.request(method, "/userinfo",
                                          headers={"Authorization": f"Bearer {body['access_token']}"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"sub": sub, "preferred_username": "demo"}
        assert resp.headers["cache-control"] == "no-store"


async def test_userinfo_without_profile_scope_returns_sub_only(oauth) -> None:
    body = await oauth.user_tokens(scope="openid")
    resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert resp.status_code == 200
    assert set(resp.json()) == {"sub"} and uuid.UUID(resp.json()["sub"])


async def test_userinfo_needs_a_token(oauth) -> None:
    resp = await oauth.client.get("/userinfo")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_userinfo_rejects_garbage(oauth) -> None:
    resp = await oauth.client.get("/userinfo", headers={"Authorization": "Bearer a.b.c"})
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


async def test_userinfo_rejects_tokens_for_other_audiences(oauth) -> None:
    # without openid the token's audience is only the resource API
    body = await oauth.user_tokens(scope="trades:read")
    resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert resp.status_code == 401
    service = (await oauth.client_credentials("ml-scorer")).json()["access_token"]
    resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {service}"})
    assert resp.status_code == 401


async def test_userinfo_rejects_the_id_token(oauth) -> None:
    body = await oauth.user_tokens(scope="openid")
    resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {body['id_token']}"})
    assert resp.status_code == 401


async def test_userinfo_follows_key_rotation(oauth, session_factory, settings) -> None:
    from bsopt_auth.rfc7517 import rotate_signing_key

    first = await oauth.user_tokens(scope="openid")
    first_headers = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await oauth.client.get("/userinfo", headers=first_headers)).status_code == 200
    rotate_signing_key(session_factory, settings.signing_alg)
    second = await oauth.user_tokens(scope="openid")
    for body in (first, second):
        resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert resp.status_code == 200, resp.text


def _sign(key, kid: str, alg: str, claims: dict) -> str:
    from joserfc import jwt

    return jwt.encode({"alg": alg, "kid": kid, "typ": "at+jwt"}, claims, key)


def _claims(settings, sub: str, *, iat: int, ttl: int) -> dict:
    return {"iss": settings.issuer, "sub": sub, "aud": [settings.issuer], "client_id": "bsopt-cli",
            "scope": "openid profile", "iat": iat, "nbf": iat, "exp": iat + ttl, "jti": str(uuid.uuid4())}


async def test_userinfo_rejects_an_expired_token(oauth, session_factory, settings) -> None:
    """Signed with the server's own active key, right audience, but expired an hour ago."""
    import time

    from bsopt_auth.rfc7517 import get_active_key

    sub = (await oauth.decode((await oauth.user_tokens(scope="openid"))["access_token"])).claims["sub"]
    with session_factory() as s:
        active = get_active_key(s, settings.signing_alg)
    token = _sign(active.key, active.kid, active.alg, _claims(settings, sub, iat=int(time.time()) - 7200, ttl=3600))
    resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert "expired" in resp.headers["www-authenticate"]


async def test_userinfo_rejects_a_key_not_in_the_jwks(oauth, settings) -> None:
    """Well-formed claims, signed by a fresh key that the server never published."""
    import time

    from bsopt_auth.rfc7517 import generate_key

    sub = (await oauth.decode((await oauth.user_tokens(scope="openid"))["access_token"])).claims["sub"]
    kid, key = generate_key(settings.signing_alg)
    token = _sign(key, kid, settings.signing_alg, _claims(settings, sub, iat=int(time.time()), ttl=300))
    resp = await oauth.client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert "JWKS" in resp.headers["www-authenticate"]

"""gRPC adapters of the shared :class:`AccessTokenVerifier` (grpc.aio).

Server side, :class:`TokenAuthInterceptor` validates ``authorization: Bearer`` metadata
on every call and checks the scope that the method needs (a table passed in by the
service). Health checks and server reflection are exempt. A bad token ends the call with
``UNAUTHENTICATED``, a missing scope with ``PERMISSION_DENIED``; a method missing from
the table is refused (fail closed). A verifier failure that is not one of its named errors
(a bug on some malformed input) is logged with its stack and answered UNAUTHENTICATED
with a fixed message, never UNKNOWN quoting the exception. The validated claims are available to the servicer
through :func:`current_claims`.

Acting for a user. A method that reads or changes a user's data takes the user from
:func:`acting_user`: the ``sub`` of a *delegated* token (RFC 8693 token exchange: the
token names the user as ``sub`` and the calling service in ``act``), never from a request
field. A service's own client-credentials token (``sub`` is the client, no ``act``) is
refused there with PERMISSION_DENIED, whatever its scopes: a service alone can no longer
read or change any user's data.

Client side, callers acting for a user pass :func:`bearer_metadata` of the exchanged
token on each call (``metadata=``). :class:`BearerTokenClientInterceptor` attaches a
client-credentials token to calls that carry no ``authorization`` of their own.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc import aio

from bsopt_common.errors import PermissionDenied
from bsopt_common.security.jwt import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InsufficientScopeError,
    InvalidTokenError,
    bearer_token,
)
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider

log = logging.getLogger(__name__)

#: What a caller is told when verifying its token failed unexpectedly.
UNVERIFIABLE = "the access token could not be verified"

_claims: contextvars.ContextVar[AccessTokenClaims | None] = contextvars.ContextVar("bsopt_claims", default=None)

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def current_claims() -> AccessTokenClaims:
    """Claims of the token on the call being served. Raises LookupError outside a call."""
    claims = _claims.get()
    if claims is None:
        raise LookupError("no authenticated gRPC call in this context")
    return claims


def acting_user() -> str:
    """The user the call acts for: ``sub`` of the call's delegated token.

    Raises PermissionDenied (gRPC PERMISSION_DENIED) for a token that is not delegated
    (a service's own client-credentials token), LookupError outside a call."""
    claims = current_claims()
    if not claims.is_delegated:
        raise PermissionDenied(
            f"{claims.client_id!r} presented its own token; this method acts for a user and needs a "
            "user-bound token from token exchange (RFC 8693)"
        )
    return claims.subject


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` (RFC 6750 §2.1 as gRPC metadata)."""
    return (("authorization", f"Bearer {token}"),)


def _abort_handler(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


# grpcio ships no type information (grpc.aio's base classes are Any to mypy).
class TokenAuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Validate the bearer token and scope of every unary call.

    ``method_scopes`` maps full method names (``/pkg.Service/Method``) to the scopes
    they need.
    """

    def __init__(self, verifier: AccessTokenVerifier, method_scopes: Mapping[str, tuple[str, ...]]):
        self.verifier = verifier
        self.method_scopes = dict(method_scopes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        if method not in self.method_scopes:
            return _abort_handler(grpc.StatusCode.PERMISSION_DENIED, f"no scope policy for {method}")
        metadata = dict(handler_call_details.invocation_metadata or ())
        token = bearer_token(metadata.get("authorization"))
        if token is None:
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        try:
            claims = await self.verifier.verify(token, self.method_scopes[method])
        except InvalidTokenError as exc:
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except InsufficientScopeError as exc:
            return _abort_handler(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except Exception:
            log.exception("token verification failed unexpectedly for %s", method)
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED, UNVERIFIABLE)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def with_claims(request: Any, context: aio.ServicerContext) -> Any:
            token_ctx = _claims.set(claims)
            try:
                return await inner(request, context)
            finally:
                _claims.reset(token_ctx)

        return grpc.unary_unary_rpc_method_handler(
            with_claims,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class BearerTokenClientInterceptor(aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc: untyped
    """Attach ``authorization: Bearer <token>`` for ``resource`` to every unary call that
    does not carry its own (a delegated token passed with ``metadata=`` is kept)."""

    def __init__(self, provider: ClientCredentialsTokenProvider, resource: str, scope: str = ""):
        self.provider = provider
        self.resource = resource
        self.scope = scope

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[aio.UnaryUnaryCall]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> aio.UnaryUnaryCall:
        metadata = list(client_call_details.metadata or ())
        if any(k.lower() == "authorization" for k, _ in metadata):
            return await continuation(client_call_details, request)
        token = await self.provider.token(self.resource, self.scope)
        metadata.append(("authorization", f"Bearer {token}"))
        details = aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def authorized_channel(
    target: str, provider: ClientCredentialsTokenProvider, resource: str, scope: str = ""
) -> aio.Channel:
    """An insecure (loopback/in-cluster, mTLS by the mesh) channel whose calls carry a
    token for ``resource``."""
    return aio.insecure_channel(target, interceptors=[BearerTokenClientInterceptor(provider, resource, scope)])

"""The one gRPC serve helper of every gRPC service (grpc.aio).

:func:`serve_grpc` owns everything that is not a service's own: the server, the standard
``grpc.health.v1`` service, server reflection, the token interceptor (one scope table
built from each service's :class:`GrpcService`), the error mapping, start, drain and
stop. A service's ``bootstrap.py`` then only says which servicers it serves and which
scope each method needs.

Input guard: before a servicer runs, :func:`check_request_strings` walks the request's
string fields recursively (nested messages, repeated fields and maps included) and refuses
a NUL byte or a string longer than :data:`MAX_STRING_LENGTH` characters with
``INVALID_ARGUMENT`` naming the field (never echoing the value): Postgres cannot store
NUL in text, and no field of ours needs more.

Errors: servicers raise the named errors of :mod:`bsopt_common.errors`;
:data:`STATUS_BY_ERROR` is the one table mapping them to gRPC status codes, applied by
:class:`DomainErrorInterceptor` to every call, so servicers carry no ``try/except``. Any
other exception is a bug: ``INTERNAL`` with a fixed message, and its stack is logged.
A named error's message is cut to :data:`MAX_ERROR_MESSAGE_LENGTH` characters, so input a
servicer quotes cannot make a reply unbounded.

Drain on stop: health flips to ``NOT_SERVING`` (load balancers and probes stop sending),
the server stops accepting calls, in-flight calls get ``grace_seconds`` to finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bsopt_common.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from bsopt_common.security.grpc import TokenAuthInterceptor
from bsopt_common.security.jwt import AccessTokenVerifier

log = logging.getLogger(__name__)

#: Named error -> gRPC status code; the most specific class in an exception's MRO wins.
STATUS_BY_ERROR: Mapping[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
INTERNAL_MESSAGE = "internal error"
#: Longest string (characters) a request field may hold; ids, symbols and text fields of
#: the contracts are far shorter.
MAX_STRING_LENGTH = 4096
#: Longest error message (characters) sent to a caller.
MAX_ERROR_MESSAGE_LENGTH = 512


def truncate(text: str, limit: int = MAX_ERROR_MESSAGE_LENGTH) -> str:
    """``text`` cut to ``limit`` characters (marked with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message a caller gets for ``exc`` raised by a servicer."""
    for cls in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code, truncate(str(exc))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def _check_string(path: str, value: str, max_length: int) -> None:
    if "\x00" in value:
        raise InvalidArgument(f"{path} must not contain NUL (0x00) characters")
    if len(value) > max_length:
        raise InvalidArgument(f"{path} is longer than {max_length} characters")


def _check_value(path: str, fd: FieldDescriptor, value: Any, max_length: int) -> None:
    if fd.type == FieldDescriptor.TYPE_STRING:
        _check_string(path, value, max_length)
    elif fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        check_request_strings(value, max_length=max_length, prefix=path)


def check_request_strings(message: Message, *, max_length: int = MAX_STRING_LENGTH, prefix: str = "") -> None:
    """Raise :class:`InvalidArgument` naming the first string field of ``message`` (at any
    depth) that holds a NUL character or more than ``max_length`` characters."""
    for fd, value in message.ListFields():
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        if fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP) and \
                fd.message_type.GetOptions().map_entry:
            key_field = fd.message_type.fields_by_name["key"]
            value_field = fd.message_type.fields_by_name["value"]
            for key, item in value.items():
                if key_field.type == FieldDescriptor.TYPE_STRING:
                    _check_string(f"{path} (a key)", key, max_length)
                _check_value(f"{path}[{truncate(str(key), 64)!r}]", value_field, item, max_length)
        elif fd.is_repeated:
            for index, item in enumerate(value):
                _check_value(f"{path}[{index}]", fd, item, max_length)
        else:
            _check_value(path, fd, value, max_length)


# grpcio ships no type information (grpc.aio's base classes are Any to mypy).
class DomainErrorInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Refuse requests with a NUL byte or an over-long string in any field
    (:func:`check_request_strings`, ``INVALID_ARGUMENT`` before the servicer runs); turn
    what a unary servicer raises into its status (see :func:`status_for`); log the stack
    of everything that maps to ``INTERNAL``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def mapped(request: Any, context: aio.ServicerContext) -> Any:
            try:
                if isinstance(request, Message):
                    check_request_strings(request)
                return await inner(request, context)
            except aio.AbortError:
                raise  # the servicer aborted with a status of its own choosing
            except Exception as exc:
                code, message = status_for(exc)
                if code == grpc.StatusCode.INTERNAL:
                    log.error("unhandled error in %s", method, exc_info=exc)
                await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            mapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class GrpcService:
    """One servicer to serve: its descriptor (``pb.DESCRIPTOR.services_by_name[...]``),
    the generated ``add_<Service>Servicer_to_server`` function, the servicer, and the
    scopes each method needs, by method name. A method missing from ``method_scopes``
    is a start-up error (fail closed), not a runtime surprise."""

    descriptor: ServiceDescriptor
    register: Callable[[Any, aio.Server], None]
    servicer: object
    method_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        name: str = self.descriptor.full_name
        return name

    def scope_table(self) -> dict[str, tuple[str, ...]]:
        """``{"/pkg.Service/Method": scopes}``. Raises ValueError naming a method
        without a scope policy, or a policy for a method the service does not have."""
        methods = {m.name for m in self.descriptor.methods}
        missing = sorted(methods - set(self.method_scopes))
        unknown = sorted(set(self.method_scopes) - methods)
        if missing or unknown:
            raise ValueError(f"{self.full_name}: methods without a scope policy {missing}, "
                             f"policies for unknown methods {unknown}")
        return {f"/{self.full_name}/{name}": tuple(scopes) for name, scopes in self.method_scopes.items()}


class GrpcServer:
    """A grpc.aio server with health, reflection, token auth and error mapping.

    ``verifier`` checks every call of ``services`` (it may be None only when there are
    no services, e.g. a worker serving health alone).
    """

    def __init__(self, *, host: str, port: int, services: Sequence[GrpcService] = (),
                 verifier: AccessTokenVerifier | None = None):
        interceptors: list[aio.ServerInterceptor] = []
        if services:
            if verifier is None:
                raise ValueError("a server with services needs a token verifier")
            scopes: dict[str, tuple[str, ...]] = {}
            for service in services:
                scopes.update(service.scope_table())
            interceptors = [TokenAuthInterceptor(verifier, scopes), DomainErrorInterceptor()]
        self.server = aio.server(interceptors=interceptors)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for service in services:
            service.register(service.servicer, self.server)
        self.service_names = [s.full_name for s in services]
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.address = f"{host}:{port}"
        self.port = self.server.add_insecure_port(self.address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC server to {self.address}")

    async def _set_all(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def start(self) -> None:
        await self.server.start()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC serving on %s (port %d)", self.address, self.port)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_seconds)


async def serve_grpc(
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    services: Sequence[GrpcService] = (),
    verifier: AccessTokenVerifier | None = None,
    grace_seconds: float = 5.0,
) -> None:
    """Serve until ``stop`` is set, then drain (see the module docstring)."""
    server = GrpcServer(host=host, port=port, services=services, verifier=verifier)
    await server.start()
    try:
        await stop.wait()
        log.info("draining gRPC server")
    finally:
        await server.stop(grace_seconds)


def raise_domain_error(exc: grpc.aio.AioRpcError) -> NoReturn:
    """Client side of :data:`STATUS_BY_ERROR`: re-raise a peer's named status as the
    matching named error (so a callee's NOT_FOUND stays NOT_FOUND for our caller); any
    other status propagates unchanged (and becomes INTERNAL here, logged)."""
    for error_type, code in STATUS_BY_ERROR.items():
        if exc.code() == code:
            raise error_type(exc.details() or code.name) from exc
    raise exc

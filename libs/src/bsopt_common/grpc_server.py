"""gRPC server bootstrap shared by every gRPC service (grpc.aio).

Adds the standard ``grpc.health.v1`` service and server reflection, installs the token
interceptor, and drains on shutdown: health flips to NOT_SERVING, the server stops
accepting new calls and gives in-flight calls ``grace_seconds`` to finish.

Errors: servicers raise :class:`ServiceError` subclasses; :func:`status_for` is the one
table mapping them (and domain ``ValueError``/``LookupError``) to gRPC status codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bsopt_common.security.grpc import TokenAuthInterceptor

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of errors that map to a gRPC status; the message is returned to the caller."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for an exception raised by a servicer."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, LookupError):
        return grpc.StatusCode.NOT_FOUND, str(exc).strip("'\"")
    return grpc.StatusCode.INTERNAL, "internal error"


async def abort_with(context: aio.ServicerContext, exc: BaseException) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unhandled servicer error", exc_info=exc)
    await context.abort(code, message)


class GrpcServer:
    """A grpc.aio server with health, reflection and token auth."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        interceptor: TokenAuthInterceptor,
        registrations: Iterable[tuple[Callable[[object, aio.Server], None], object]],
        service_names: Iterable[str],
    ):
        self.server = aio.server(interceptors=[interceptor])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for add, servicer in registrations:
            add(servicer, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.address = f"{host}:{port}"
        self.port = self.server.add_insecure_port(self.address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC server to {self.address}")

    async def _set_all(self, status) -> None:  # noqa: ANN001
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def start(self) -> None:
        await self.server.start()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC serving on %s (port %d)", self.address, self.port)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_seconds)

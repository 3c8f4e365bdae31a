"""Calls to a gRPC service under test, as a client with a bearer token would make them.

``call, refused = grpc_calls(pb_grpc.BrokerGatewayServiceStub)`` gives two coroutine
functions of ``(target, method, request, token)``: ``call`` returns the response
(``token=None`` sends no ``authorization`` metadata), ``refused`` expects the call to fail
and returns the :class:`grpc.aio.AioRpcError` (its ``code()`` and ``details()``).
Each call opens its own insecure channel to ``target`` (``host:port`` on 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Call = Callable[[str, str, Any, "str | None"], Awaitable[Any]]
Refused = Callable[[str, str, Any, "str | None"], Awaitable[grpc.aio.AioRpcError]]


def grpc_calls(stub_class: Callable[[grpc.aio.Channel], Any], *, timeout_s: float = 30.0) -> tuple[Call, Refused]:
    """``(call, refused)`` for services of ``stub_class`` (see the module docstring)."""

    async def call(target: str, method: str, request: Any, token: str | None) -> Any:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = stub_class(channel)
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return await getattr(stub, method)(request, metadata=metadata, timeout=timeout_s)

    async def refused(target: str, method: str, request: Any, token: str | None) -> grpc.aio.AioRpcError:
        try:
            await call(target, method, request, token)
        except grpc.aio.AioRpcError as err:
            return err
        raise AssertionError(f"{method} at {target} succeeded; it was expected to be refused")

    return call, refused


__all__ = ["grpc_calls"]

"""The broker-connection RPCs of ``BrokerGatewayService`` (a mixin of the servicer):
decode, call :class:`~.service.ConnectionService` in a worker thread, encode.

Every method but ``CompleteBrokerConnection`` acts for the user of the call's delegated
token (:func:`~bsopt_common.security.grpc.acting_user`). ``CompleteBrokerConnection`` is
reached from the user's browser through resource-api's OAuth callback, which has no user
token: its user is the one the ``state`` was bound to at start (single use, expiring,
unguessable; RFC 6749 §10.12). With a delegated token, the token's user must be the
state's (another user's state is INVALID_ARGUMENT, as an unknown one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt_broker.connections.service import ConnectionService
from bsopt_broker.connections.store import Connection, ConnectionMethod, ConnectionStatus
from bsopt_broker.domain.records import AccountKind
from bsopt_common import codec
from bsopt_common.errors import FailedPrecondition
from bsopt_common.security.grpc import acting_user, current_claims

#: Scopes of the connection RPCs (merged into the servicer's METHOD_SCOPES).
CONNECTION_METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "StartBrokerConnection": ("broker:connections",),
    "CompleteBrokerConnection": ("broker:connections.complete",),
    "ConnectBrokerWithKeys": ("broker:connections",),
    "ListBrokerConnections": ("broker:connections.read",),
    "PauseBrokerConnection": ("broker:connections",),
    "RevokeBrokerConnection": ("broker:connections",),
    "ResumeBrokerConnection": ("broker:connections",),
}
STATUS = codec.EnumCodec(pb.BrokerConnectionStatus, ConnectionStatus, "BROKER_CONNECTION_STATUS_")
METHOD = codec.EnumCodec(pb.BrokerConnectionMethod, ConnectionMethod, "BROKER_CONNECTION_METHOD_")
KIND = codec.EnumCodec(pb.AccountKind, AccountKind, "ACCOUNT_KIND_")


def connection_pb(c: Connection) -> pb.BrokerConnection:
    return pb.BrokerConnection(
        connection_id=c.connection_id, broker=c.broker, method=METHOD.to_pb(c.method), status=STATUS.to_pb(c.status),
        account_kind=KIND.to_pb(c.account_kind), allow_live=c.allow_live, scope=c.scope,
        created_at=codec.timestamp(c.created_at), updated_at=codec.timestamp(c.updated_at))


class ConnectionRpcs:
    """Mixed into the servicer before the generated base class; ``connections`` is set by it."""

    connections: ConnectionService | None

    def _service(self) -> ConnectionService:
        if self.connections is None:
            raise FailedPrecondition("broker connections are not enabled in this broker-gateway")
        return self.connections

    async def StartBrokerConnection(self, request: pb.StartBrokerConnectionRequest,
                                    context: aio.ServicerContext) -> pb.StartBrokerConnectionResponse:
        """INVALID_ARGUMENT (broker), FAILED_PRECONDITION (OAuth not configured)."""
        service = self._service()
        paper = request.paper if request.HasField("paper") else True
        started = await asyncio.to_thread(service.start, acting_user(), broker=request.broker, paper=paper,
                                          allow_live=request.allow_live)
        return pb.StartBrokerConnectionResponse(authorize_url=started.authorize_url, state=started.state,
                                                expires_at=codec.timestamp(started.expires_at))

    async def CompleteBrokerConnection(self, request: pb.CompleteBrokerConnectionRequest,
                                       context: aio.ServicerContext) -> pb.BrokerConnection:
        """INVALID_ARGUMENT (state unknown, used, expired or another user's; code refused by
        Alpaca), FAILED_PRECONDITION (kind contradiction), UNAVAILABLE (Alpaca)."""
        service = self._service()
        claims = current_claims()
        user = claims.subject if claims.is_delegated else None
        connection = await asyncio.to_thread(service.complete, request.state, request.code, user)
        return connection_pb(connection)

    async def ConnectBrokerWithKeys(self, request: pb.ConnectBrokerWithKeysRequest,
                                    context: aio.ServicerContext) -> pb.BrokerConnection:
        """INVALID_ARGUMENT (missing or refused keys: nothing stored), FAILED_PRECONDITION
        (paper/live contradiction), UNAVAILABLE (Alpaca)."""
        service = self._service()
        kw: dict[str, Any] = {"paper": request.paper if request.HasField("paper") else None}
        connection = await asyncio.to_thread(
            service.connect_with_keys, acting_user(), broker=request.broker, key_id=request.api_key_id,
            secret=request.api_secret_key, allow_live=request.allow_live, **kw)
        return connection_pb(connection)

    async def ListBrokerConnections(self, request: pb.ListBrokerConnectionsRequest,
                                    context: aio.ServicerContext) -> pb.ListBrokerConnectionsResponse:
        service = self._service()
        found = await asyncio.to_thread(service.list, acting_user())
        return pb.ListBrokerConnectionsResponse(connections=[connection_pb(c) for c in found])

    async def PauseBrokerConnection(self, request: pb.PauseBrokerConnectionRequest,
                                    context: aio.ServicerContext) -> pb.BrokerConnection:
        """NOT_FOUND (no such connection of the caller, or revoked)."""
        service = self._service()
        return connection_pb(await asyncio.to_thread(service.pause, acting_user(), request.connection_id))

    async def ResumeBrokerConnection(self, request: pb.ResumeBrokerConnectionRequest,
                                     context: aio.ServicerContext) -> pb.BrokerConnection:
        """NOT_FOUND (no such connection of the caller, or revoked)."""
        service = self._service()
        return connection_pb(await asyncio.to_thread(service.resume, acting_user(), request.connection_id))

    async def RevokeBrokerConnection(self, request: pb.RevokeBrokerConnectionRequest,
                                     context: aio.ServicerContext) -> pb.BrokerConnection:
        """NOT_FOUND (no such connection of the caller, or revoked already)."""
        service = self._service()
        return connection_pb(await asyncio.to_thread(service.revoke, acting_user(), request.connection_id))

"""Users connect their own Alpaca account: ``/v1/brokers/alpaca/connect``,
``/v1/brokers/alpaca/callback`` and ``/v1/broker-connections`` (list, ``:pause``,
``:resume``, ``DELETE`` to revoke).

broker-gateway does the work and keeps the credentials (encrypted); this API acts for
the user with a delegated token (RFC 8693), as everywhere. The OAuth callback is the one
exception: Alpaca redirects the user's *browser* there
(https://docs.alpaca.markets/docs/using-oauth2-and-trading-api), which carries no bsopt
token, so the callback calls broker-gateway with this service's own token and
broker-gateway takes the user from the ``state`` it bound to the user at start (single
use, expiring after 10 minutes by default, unguessable; RFC 6749 §10.12).

A connection's ``connection_id`` is an account id: ``GET /v1/accounts/{id}`` and
``POST /v1/accounts/{id}/imports`` take it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt_api import encoding
from bsopt_api.api.deps import Backends, TradesReader, TradesWriter
from bsopt_api.clients import BROKER_GATEWAY
from bsopt_api.problems import problem

router = APIRouter(tags=["broker-connections"])
CONNECTIONS = "/v1/broker-connections"
_KEY = r"^[\x21-\x7e]+$"  # printable ASCII, no spaces


class AlpacaConnect(BaseModel):
    """Empty (or without keys): start connecting by OAuth at Alpaca. With
    ``api_key_id`` and ``api_secret_key``: connect with API keys (checked at Alpaca first;
    nothing is stored when Alpaca refuses them)."""

    model_config = ConfigDict(extra="forbid")

    api_key_id: str | None = Field(default=None, min_length=1, max_length=256, pattern=_KEY)
    api_secret_key: SecretStr | None = Field(default=None, min_length=1, max_length=256)
    #: Paper (simulated money) or live. OAuth: default paper. Keys: unset = detected.
    paper: bool | None = None
    #: Live accounts only: allow orders on it (otherwise it only reads and imports).
    allow_live: bool = False

    @model_validator(mode="after")
    def _both_keys_or_none(self) -> AlpacaConnect:
        if (self.api_key_id is None) != (self.api_secret_key is None):
            raise ValueError("give both api_key_id and api_secret_key, or neither (OAuth)")
        return self


class BrokerConnectionStart(BaseModel):
    #: Send the user's browser here to approve at Alpaca; Alpaca then redirects it to
    #: ``/v1/brokers/alpaca/callback``.
    authorize_url: str
    state: str
    expires_at: str | None


class BrokerConnection(BaseModel):
    connection_id: str
    #: The same id: what ``/v1/accounts/{account_id}`` takes.
    account_id: str
    broker: str
    #: ``oauth`` or ``api_key``.
    method: str
    #: ``active``, ``paused`` (orders refused; reads and imports allowed) or ``revoked``.
    status: str
    account_kind: str | None
    allow_live: bool
    #: What Alpaca granted (OAuth); empty for keys.
    scope: str
    created_at: str | None
    updated_at: str | None


class BrokerConnections(BaseModel):
    connections: list[BrokerConnection]


@router.post("/v1/brokers/alpaca/connect", response_model=None, status_code=status.HTTP_200_OK, responses={
    200: {"model": BrokerConnectionStart, "description": "OAuth started: send the browser to authorize_url"},
    201: {"model": BrokerConnection, "description": "Connected with API keys"}})
async def connect_alpaca(principal: TradesWriter, backends: Backends, response: Response,
                         body: Annotated[AlpacaConnect | None, Body()] = None) -> dict[str, Any]:
    """Connect your Alpaca account. Without keys: start OAuth (200: ``authorize_url`` and
    ``state``; 409 when this server has no Alpaca OAuth app configured). With keys: 201
    and the connection, 400 when Alpaca refuses them, 409 when ``paper`` contradicts the
    account."""
    body = body or AlpacaConnect()
    metadata = await backends.acting_for(principal, BROKER_GATEWAY, "broker:connections")
    if body.api_key_id is None or body.api_secret_key is None:
        start = pb.StartBrokerConnectionRequest(broker="alpaca", allow_live=body.allow_live)
        if body.paper is not None:
            start.paper = body.paper
        started = await backends.broker_gateway.StartBrokerConnection(
            start, timeout=backends.timeout_seconds, metadata=metadata)
        response.headers["Cache-Control"] = "no-store"
        return encoding.broker_connection_start(started)
    request = pb.ConnectBrokerWithKeysRequest(broker="alpaca", api_key_id=body.api_key_id,
                                              api_secret_key=body.api_secret_key.get_secret_value(),
                                              allow_live=body.allow_live)
    if body.paper is not None:
        request.paper = body.paper
    connection = await backends.broker_gateway.ConnectBrokerWithKeys(
        request, timeout=backends.timeout_seconds, metadata=metadata)
    response.status_code = status.HTTP_201_CREATED
    response.headers["Location"] = f"{CONNECTIONS}/{connection.connection_id}"
    return encoding.broker_connection(connection)


@router.get("/v1/brokers/alpaca/callback", response_model=BrokerConnection,
            responses={400: {"description": "Alpaca refused or the state is unknown, used or expired"}})
async def alpaca_callback(backends: Backends, response: Response,
                          state: Annotated[str, Query(min_length=1, max_length=512, pattern=_KEY)],
                          code: Annotated[str | None, Query(min_length=1, max_length=512, pattern=_KEY)] = None,
                          error: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")] = None,
                          ) -> Any:
    """Where Alpaca redirects the user's browser (no bsopt token: the user is the one the
    ``state`` was issued to). Completes the connection: 200 and the connection; 400 for a
    state that is unknown, used, expired, or an ``error`` from Alpaca (e.g. the user
    denied access)."""
    response.headers["Cache-Control"] = "no-store"
    if error is not None or code is None:
        reason = f"Alpaca did not authorize the connection ({error})" if error else "code is required"
        return problem(400, reason, instance="/v1/brokers/alpaca/callback",
                       headers={"Cache-Control": "no-store"})
    connection = await backends.broker_gateway.CompleteBrokerConnection(
        pb.CompleteBrokerConnectionRequest(state=state, code=code), timeout=backends.timeout_seconds,
        metadata=await backends.as_service(BROKER_GATEWAY, "broker:connections.complete"))
    return encoding.broker_connection(connection)


@router.get(CONNECTIONS, response_model=BrokerConnections)
async def list_broker_connections(principal: TradesReader, backends: Backends) -> dict[str, Any]:
    """Your connections that are not revoked, oldest first."""
    found = await backends.broker_gateway.ListBrokerConnections(
        pb.ListBrokerConnectionsRequest(), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:connections.read"))
    return {"connections": [encoding.broker_connection(c) for c in found.connections]}


@router.post(CONNECTIONS + "/{connection_id}:pause", response_model=BrokerConnection)
async def pause_broker_connection(connection_id: str, principal: TradesWriter, backends: Backends) -> dict[str, Any]:
    """Pause: orders are refused (409) until resumed (``:resume``); reading the account and
    importing stay allowed. 404 for another user's or a revoked connection."""
    connection = await backends.broker_gateway.PauseBrokerConnection(
        pb.PauseBrokerConnectionRequest(connection_id=connection_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:connections"))
    return encoding.broker_connection(connection)


@router.post(CONNECTIONS + "/{connection_id}:resume", response_model=BrokerConnection)
async def resume_broker_connection(connection_id: str, principal: TradesWriter, backends: Backends) -> dict[str, Any]:
    """Resume a paused connection: orders are allowed again. 404 for another user's or a
    revoked connection."""
    connection = await backends.broker_gateway.ResumeBrokerConnection(
        pb.ResumeBrokerConnectionRequest(connection_id=connection_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:connections"))
    return encoding.broker_connection(connection)


@router.delete(CONNECTIONS + "/{connection_id}", response_model=BrokerConnection)
async def revoke_broker_connection(connection_id: str, principal: TradesWriter, backends: Backends) -> dict[str, Any]:
    """Revoke: the stored credentials are deleted and the account is 404 from now on.
    404 for another user's or an already revoked connection."""
    connection = await backends.broker_gateway.RevokeBrokerConnection(
        pb.RevokeBrokerConnectionRequest(connection_id=connection_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:connections"))
    return encoding.broker_connection(connection)

"""The named errors that may reach a client.

Domain code and stores raise these (or subclasses named after the domain's own terms,
e.g. ``AccountNotFound(NotFound)``); the wire adapters map them through one table each:
gRPC status codes in :mod:`bsopt_common.grpc_server`, HTTP problem details in
resource-api. The message is written for the caller and is returned to them.

Anything else a handler raises (a bare ``ValueError``, ``KeyError``,
``AttributeError``, a driver error) is a bug or an outage, never the caller's mistake:
it becomes gRPC ``INTERNAL`` / HTTP 500 with a fixed message, and its stack is logged.

Pure Python, no I/O: ``domain/`` packages may import this module.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error whose message is returned to the caller."""


class InvalidArgument(DomainError, ValueError):
    """The request itself is malformed or out of bounds (gRPC ``INVALID_ARGUMENT``,
    HTTP 400/422). Retrying the same request can never succeed."""


class NotFound(DomainError, LookupError):
    """The named resource does not exist for this caller (gRPC ``NOT_FOUND``, HTTP 404).
    Another user's resource is reported the same way, so ids cannot be probed."""


class FailedPrecondition(DomainError):
    """The request is well-formed but the system is not in a state that allows it
    (gRPC ``FAILED_PRECONDITION``, HTTP 409): e.g. an order the balance does not cover."""


class AlreadyExists(DomainError):
    """The resource the request creates exists already (gRPC ``ALREADY_EXISTS``, HTTP 409)."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this (gRPC ``PERMISSION_DENIED``, HTTP 403)."""


class Unavailable(DomainError):
    """A dependency is down for now; the same request may succeed later
    (gRPC ``UNAVAILABLE``, HTTP 503 with ``Retry-After``)."""


class ResourceExhausted(DomainError):
    """The caller is over a quota (e.g. too many queued jobs); the same request may
    succeed once their usage drops (gRPC ``RESOURCE_EXHAUSTED``, HTTP 429 with
    ``Retry-After``)."""

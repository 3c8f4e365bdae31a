"""Wire conversions, written once: timestamps, enumerations, and dataclass records to and
from protobuf messages. Servicers, stores, consumers and resource-api's JSON all use
these instead of converting by hand.

Conventions:

* instants are timezone-aware UTC ``datetime``\\ s in Python, ``google.protobuf.Timestamp``
  on the wire, and RFC 3339 strings with a ``Z`` suffix in JSON and event headers; a
  naive ``datetime`` is taken as UTC (the convention of the whole suite);
* a proto enum ``<TYPE>_<NAME>`` maps to the member ``NAME`` of its Python enum in
  :mod:`bsopt_common.vocabulary` (``SIDE_BUY`` <-> ``Side.BUY``); ``*_UNSPECIFIED`` or an
  unknown number is the caller's mistake (:class:`~bsopt_common.errors.InvalidArgument`);
* money is :class:`~bsopt_common.money.Money` in Python and ``bsopt.type.v1.Money``
  (units + nanos, as ``google.type.Money``) on the wire;
* a frozen dataclass maps to a message field by field, by name (:func:`to_message`,
  :func:`from_message`): ``date`` <-> ISO ``YYYY-MM-DD`` string, ``datetime`` <->
  ``Timestamp``, enum <-> proto enum, Money <-> Money, ``None`` <-> an unset field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as _broker_pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as _scorer_pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as _trainer_pb
from bsopt.type.v1 import money_pb2 as _money_pb
from bsopt_common.errors import InvalidArgument
from bsopt_common.money import NANO, Money
from bsopt_common.vocabulary import BiasLabel, JobStatus, Side

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

E = TypeVar("E", bound=Enum)
M = TypeVar("M", bound=Message)
D = TypeVar("D", bound="DataclassInstance")

# --- timestamps -------------------------------------------------------------------------


def utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime (a naive one is taken as UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def timestamp(dt: datetime) -> Timestamp:
    """``dt`` as a protobuf ``Timestamp``."""
    ts = Timestamp()
    ts.FromDatetime(utc(dt))
    return ts



def from_timestamp(message: Message, field: str) -> datetime | None:
    """``message.<field>`` as an aware UTC datetime, or None when the field is unset."""
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    dt: datetime = value.ToDatetime(tzinfo=UTC)
    return dt


def required_timestamp(message: Message, field: str) -> datetime:
    """Like :func:`from_timestamp`; raises InvalidArgument ``"<field> is required"``."""
    value = from_timestamp(message, field)
    if value is None:
        raise InvalidArgument(f"{field} is required")
    return value


def rfc3339(dt: datetime, timespec: str = "auto") -> str:
    """``2024-03-01T09:30:00.123Z`` (``timespec`` as in ``datetime.isoformat``)."""
    return utc(dt).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_rfc3339(value: str) -> datetime:
    """Inverse of :func:`rfc3339` (any RFC 3339 offset); ValueError if malformed."""
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def rfc3339_field(message: Message, field: str) -> str | None:
    """``message.<field>`` (a Timestamp) as RFC 3339 UTC, or None when unset."""
    value = from_timestamp(message, field)
    return None if value is None else rfc3339(value)


# --- enumerations ------------------------------------------------------------------------


class EnumCodec(Generic[E]):
    """A proto enum type <-> a Python enum whose member names are the proto names less
    ``prefix``. Raises KeyError at construction when the two do not match one to one
    (except the proto's ``*_UNSPECIFIED``)."""

    def __init__(self, pb_enum: Any, py_enum: type[E], prefix: str):
        self.pb_enum = pb_enum
        self.py_enum = py_enum
        self.prefix = prefix
        self._to_pb: dict[E, int] = {m: pb_enum.Value(prefix + m.name) for m in py_enum}
        self._from_pb: dict[int, E] = {v: k for k, v in self._to_pb.items()}
        extra = set(pb_enum.values()) - set(self._from_pb) - {pb_enum.Value(prefix + "UNSPECIFIED")}
        if extra:
            raise KeyError(f"{py_enum.__name__} lacks members for {sorted(pb_enum.Name(v) for v in extra)}")

    def to_pb(self, value: E | str) -> int:
        """The proto number of ``value`` (a member, or a member's value)."""
        return self._to_pb[self.py_enum(value)]

    def from_pb(self, number: int, field: str | None = None) -> E:
        """The member for ``number``; InvalidArgument for UNSPECIFIED or an unknown number."""
        try:
            return self._from_pb[number]
        except KeyError:
            names = " or ".join(self.prefix + m.name for m in self.py_enum)
            raise InvalidArgument(f"{field or self.py_enum.__name__.lower()} must be {names}") from None

    def short_name(self, number: int) -> str:
        """``SIDE_BUY`` -> ``"BUY"``; a number newer than this contract reads as itself."""
        try:
            return str(self.pb_enum.Name(number)).removeprefix(self.prefix)
        except ValueError:
            return str(number)


# --- dataclass records <-> messages --------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _to_wire(value: Any, fd: FieldDescriptor) -> Any:
    if isinstance(value, Money):
        return money_pb(value)
    if isinstance(value, list | tuple):
        return [_to_wire(v, fd) for v in value]
    if dataclasses.is_dataclass(value) and fd.message_type is not None:
        return to_message(value, message_factory.GetMessageClass(fd.message_type))
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        if fd.enum_type is not None:
            return fd.enum_type.values_by_name[f"{_enum_prefix(fd)}{value.name}"].number
        return value.value
    return value


def _enum_prefix(fd: FieldDescriptor) -> str:
    # JobStatus -> "JOB_STATUS_": the buf-style prefix of the enum type's values.
    first = fd.enum_type.values[0].name
    return first[: -len("UNSPECIFIED")] if first.endswith("UNSPECIFIED") else ""


def to_message(record: Any, message_type: type[M], **overrides: Any) -> M:
    """Build ``message_type`` from the dataclass ``record``: every message field whose
    name is a field of the record (or a keyword in ``overrides``) is set; ``None``
    leaves the field unset."""
    fields = message_type.DESCRIPTOR.fields_by_name
    values: dict[str, Any] = {}
    source = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    source.update(overrides)
    for name, value in source.items():
        fd = fields.get(name)
        if fd is None or value is None:
            continue
        values[name] = _to_wire(value, fd)
    message: M = message_type(**values)
    return message


def from_message(message: Message, record_type: type[D], **overrides: Any) -> D:
    """Build the dataclass ``record_type`` from ``message`` by field name, converting
    ISO date strings, Timestamps and enums to the record's annotated types. An unset
    ``optional`` field (or a Timestamp) is left to the record's default. Raises
    InvalidArgument naming the field for a malformed date or an unspecified enum."""
    hints = _field_types(record_type)
    fields = message.DESCRIPTOR.fields_by_name
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(record_type):
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
            continue
        fd = fields.get(f.name)
        if fd is None:
            continue
        if fd.has_presence and not fd.is_repeated and not message.HasField(f.name):
            continue  # the record's default
        tp, _ = _unwrap_optional(hints[f.name])
        if tp is Money:
            kwargs[f.name] = money_from_pb(message, f.name)
            continue
        raw = getattr(message, f.name)
        kwargs[f.name] = _from_wire(raw, tp, fd)
    return record_type(**kwargs)


def _from_wire(raw: Any, tp: Any, fd: FieldDescriptor) -> Any:
    name = fd.name
    if tp is date:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise InvalidArgument(f"{name} must be an ISO date (YYYY-MM-DD), got {raw!r}") from None
    if tp is datetime:
        return raw.ToDatetime(tzinfo=UTC)
    if isinstance(tp, type) and issubclass(tp, Enum):
        if fd.enum_type is not None:
            value = fd.enum_type.values_by_number.get(raw)
            member = None if value is None else tp.__members__.get(value.name.removeprefix(_enum_prefix(fd)))
        else:
            member = next((m for m in tp if m.value == raw), None)
        if member is None:
            raise InvalidArgument(f"{name} has no valid value ({raw!r})")
        return member
    return raw


# --- the suite's enumerations (see bsopt_common.vocabulary) ------------------------------------

SIDE: EnumCodec[Side] = EnumCodec(_broker_pb.Side, Side, "SIDE_")
BIAS_LABEL: EnumCodec[BiasLabel] = EnumCodec(_scorer_pb.BiasLabel, BiasLabel, "BIAS_LABEL_")
JOB_STATUS: EnumCodec[JobStatus] = EnumCodec(_trainer_pb.JobStatus, JobStatus, "JOB_STATUS_")


# --- money (bsopt.type.v1.Money, units + nanos as google.type.Money) ------------------------

_BILLION = 1_000_000_000


def money_pb(money: Money) -> _money_pb.Money:
    """``Money`` -> ``bsopt.type.v1.Money`` (exact: amounts carry at most 9 decimals)."""
    nanos_total = int(money.amount.scaleb(9))  # exact: amounts are quantized to nanos
    sign = -1 if nanos_total < 0 else 1
    units, nanos = divmod(abs(nanos_total), _BILLION)  # integer arithmetic, no float
    return _money_pb.Money(currency_code=money.currency, units=sign * units, nanos=sign * nanos)


def money_from_pb(message: Message, field: str) -> Money:
    """``message.<field>`` as Money. InvalidArgument naming the field when it is unset,
    has no or a malformed currency code, nanos out of range, or signs that disagree."""
    if not message.HasField(field):
        raise InvalidArgument(f"{field} is required")
    m: _money_pb.Money = getattr(message, field)
    if not -_BILLION < m.nanos < _BILLION:
        raise InvalidArgument(f"{field}.nanos must be within +-999,999,999, got {m.nanos}")
    if (m.units > 0 and m.nanos < 0) or (m.units < 0 and m.nanos > 0):
        raise InvalidArgument(f"{field}: units and nanos must have the same sign")
    try:
        return Money(Decimal(m.units) + Decimal(m.nanos) * NANO, m.currency_code)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc}") from None


# --- dataclass records <-> JSON (stores' JSONB columns) -------------------------------------


def record_from_dict(record_type: type[D], data: dict[str, Any]) -> D:
    """Build the dataclass ``record_type`` from a JSON object written by its ``asdict``
    (or a ``to_dict`` that writes dates as ISO strings): ISO strings become ``date`` /
    ``datetime`` where the record's annotations say so, enum values their members. Keys
    the record does not have raise InvalidArgument."""
    hints = _field_types(record_type)
    names = {f.name for f in dataclasses.fields(record_type)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidArgument(f"unknown {record_type.__name__} fields {unknown}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp, _ = _unwrap_optional(hints[name])
        if value is None:
            kwargs[name] = None
        elif tp is date and isinstance(value, str):
            kwargs[name] = date.fromisoformat(value)
        elif tp is datetime and isinstance(value, str):
            kwargs[name] = parse_rfc3339(value)
        elif isinstance(tp, type) and issubclass(tp, Enum):
            kwargs[name] = tp(value)
        else:
            kwargs[name] = value
    return record_type(**kwargs)

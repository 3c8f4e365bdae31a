"""Pure parts of the coach stream: the message shape, the LISTEN connection string."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from bsopt_api import stream
from bsopt_common.db import normalise_url


def test_message_carries_type_id_and_seq_first_and_never_lets_the_payload_override_them():
    assert stream.message(7, "import.progress", {"import_id": "i", "id": 99, "type": "x", "seq": 1}) == {
        "type": "import.progress", "id": 7, "seq": 7, "import_id": "i"}


def test_listen_uses_the_direct_endpoint_of_a_pooled_neon_url():
    pooled = normalise_url("postgresql://u:p@ep-cool-1-pooler.eu-central-1.aws.neon.tech/db")
    direct = make_url(stream.listen_conninfo(pooled))
    assert direct.drivername == "postgresql"
    assert direct.host == "ep-cool-1.eu-central-1.aws.neon.tech"
    assert (direct.username, direct.password, direct.database) == ("u", "p", "db")
    assert direct.query["sslmode"] == "require"
    local = make_url(stream.listen_conninfo(normalise_url("postgresql://u@127.0.0.1:5432/db")))
    assert (local.host, local.port) == ("127.0.0.1", 5432)


def test_append_refuses_what_cannot_be_delivered():
    with pytest.raises(ValueError, match="user id"):
        stream.append(None, "", stream.COACH_REFLECT, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown coach stream event type"):
        stream.append(None, "u", "coach.unknown", {})  # type: ignore[arg-type]

"""Revision 0005 on a database that already has coach messages: each becomes a
``coach.reflect`` stream event with its ``seq`` as ``id`` (old ``?after=`` cursors stay
valid), and new events continue after them."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bsopt_api import stream
from bsopt_common import migrations
from bsopt_common.db import create_db_engine, make_session_factory, session_scope


@pytest.fixture(scope="module")
def engine(postgres_url):
    eng = create_db_engine(postgres_url, application_name="bsopt-api-stream-migration-tests")
    yield eng
    eng.dispose()


def test_existing_coach_messages_are_copied_into_the_stream_with_their_seq(engine):
    migrations.upgrade("bsopt_api", engine, "api", "0004")
    with engine.begin() as conn:
        for seq, trade in ((5, "t-5"), (9, "t-9")):
            conn.execute(text(
                "INSERT INTO api.coach_messages (seq, user_id, trade_id, payload) "
                "VALUES (:seq, 'alice', :trade, CAST(:payload AS jsonb))"),
                {"seq": seq, "trade": trade,
                 "payload": f'{{"type": "coach.reflect", "trade_id": "{trade}", "label": "FOMO"}}'})
    migrations.upgrade("bsopt_api", engine, "api")

    with session_scope(make_session_factory(engine)) as session:
        assert stream.events_after(session, "alice", 0, 10) == [
            {"type": "coach.reflect", "id": 5, "seq": 5, "trade_id": "t-5", "label": "FOMO"},
            {"type": "coach.reflect", "id": 9, "seq": 9, "trade_id": "t-9", "label": "FOMO"},
        ]
        assert stream.events_after(session, "alice", 5, 10)[0]["trade_id"] == "t-9"  # an old cursor
        # the copied trades are deduplicated, new events come after the copied ids
        assert stream.append(session, "alice", stream.COACH_REFLECT, {"trade_id": "t-9"},
                             dedupe_key="coach.reflect:t-9") is None
        added = stream.append(session, "alice", stream.IMPORT_PROGRESS, {"import_id": "i"})
        assert added is not None and added["id"] > 9

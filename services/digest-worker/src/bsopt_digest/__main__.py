"""``python -m bsopt_digest``: run digest-worker until SIGINT/SIGTERM.

``python -m bsopt_digest set-time-zone USER_ID ZONE``: set a user's IANA time zone (the
weekly digest of a week is built after Monday 00:00 there; UTC when never set). Exit
status 2 for an unknown zone."""

from __future__ import annotations

import sys

from bsopt_common.runtime import load_settings, run_service
from bsopt_digest.bootstrap import serve
from bsopt_digest.config import DigestSettings


def set_time_zone(args: list[str]) -> int:
    from bsopt_common.db import create_db_engine, make_session_factory, session_scope
    from bsopt_common.errors import InvalidArgument
    from bsopt_digest import digest_store

    if len(args) != 2:
        print("usage: python -m bsopt_digest set-time-zone USER_ID ZONE", file=sys.stderr)
        return 2
    user_id, zone = args
    settings = load_settings(DigestSettings)
    engine = create_db_engine(settings.require_database_url(), application_name="bsopt-digest-admin")
    try:
        with session_scope(make_session_factory(engine)) as session:
            digest_store.set_time_zone(session, user_id, zone)
    except InvalidArgument as exc:
        print(f"digest-worker: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"user {user_id}: weekly digests in {zone}")
    return 0


def main() -> None:
    if sys.argv[1:2] == ["set-time-zone"]:
        raise SystemExit(set_time_zone(sys.argv[2:]))
    run_service(DigestSettings, serve)


if __name__ == "__main__":
    main()

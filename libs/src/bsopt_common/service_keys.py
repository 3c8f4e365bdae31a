"""Each service's own key pair on disk, for the local stack and docker compose.

``ensure_service_keys(directory, client_ids)`` creates, once per client id,
``<client_id>.jwk`` (the private JWK, mode 0600, in a 0700 directory) and writes its
public JWK Set next to it as ``<client_id>.jwks.json``: the file the auth-server's
``seed-dev --client-keys-dir`` registers as that client's JWKS. Existing private keys are
kept, so a restarted stack keeps its identities.

In production a platform team generates the key pair in its secret store, mounts the
private JWK into the service (``<PREFIX>SIGNING_KEY_FILE``) and registers the public
half with ``python -m bsopt_auth clients set-jwks <client_id> --file <jwks.json>``.

Command line: ``python -m bsopt_common.service_keys DIR CLIENT_ID...``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from bsopt_common.security.event_signing import generate_signing_key, load_signing_key, private_jwk_json, public_jwks


def ensure_service_keys(directory: Path, client_ids: Iterable[str]) -> dict[str, Path]:
    """``{client_id: private key file}``, creating what is missing (see the module docstring).
    Raises SigningKeyError for an existing file that holds no usable private key."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files: dict[str, Path] = {}
    for client_id in client_ids:
        private = directory / f"{client_id}.jwk"
        if not private.exists():
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(private_jwk_json(generate_signing_key()))
        key = load_signing_key(private.read_text())
        (directory / f"{client_id}.jwks.json").write_text(json.dumps(public_jwks(key)))
        files[client_id] = private.resolve()
    return files


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m bsopt_common.service_keys DIR CLIENT_ID...", file=sys.stderr)
        return 2
    for client_id, path in ensure_service_keys(Path(args[0]), args[1:]).items():
        print(f"{client_id}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

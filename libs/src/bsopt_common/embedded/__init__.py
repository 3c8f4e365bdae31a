"""Embedded infrastructure for tests and local development, no Docker needed.

* :mod:`bsopt_common.embedded.kafka`: a Kafka-protocol broker (librdkafka's mock
  cluster, bundled in the ``confluent-kafka`` wheel) on 127.0.0.1;
* :mod:`bsopt_common.embedded.postgres`: a real PostgreSQL server from the
  ``pgserver`` wheel (extra ``bsopt-libs[embedded]``), reached over a unix socket.

Nothing here starts at import time; the submodules are imported lazily by callers.
"""

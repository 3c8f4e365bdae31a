"""digest-worker: weekly digests of a user's scored trades (one per ISO week), published
as ``digests.ready.v1``. Serves only the standard gRPC health service."""

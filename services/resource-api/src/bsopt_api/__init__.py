"""bsopt resource-api: the users' REST ``/v1`` API and the ``/v1/ws/coach`` WebSocket.

A resource server in OAuth terms (RFC 6749 §1.1): it accepts access tokens with audience
``urn:bsopt:resource-api``, takes the user id from the token's ``sub`` and calls the
backends (broker-gateway, ml-scorer, rl-trainer) over gRPC with its own
client-credentials tokens, passing that user id explicitly. It consumes
``trades.scored.v1`` (coach messages pushed to the user's sockets) and
``digests.ready.v1`` (weekly digests projection) into its ``api`` schema.

Reading order: ``config`` -> ``models`` -> ``encoding`` -> ``projections`` ->
``clients`` -> ``problems`` -> ``hub`` -> ``consumers`` -> ``api/`` -> ``bootstrap`` ->
``app`` -> ``__main__``.
"""

"""Broker connections: users connect their own Alpaca account from the API, by OAuth 2.0
(:mod:`.oauth`) or with API keys, and broker-gateway stores the credentials encrypted
(:mod:`.crypto`, :mod:`.store`) and serves the account as any other (:mod:`.service`)."""

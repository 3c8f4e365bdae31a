"""bsopt shared glue: settings, database, events, security, telemetry, market data.

Nothing in this package connects to anything at import time.
"""

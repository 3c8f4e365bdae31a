"""RFC 6749 (as profiled by OAuth 2.1): errors, scopes, client authentication, endpoints."""

"""How the services authenticate to a real Kafka: SASL/OAUTHBEARER (KIP-255, RFC 7628)
with their own client-credentials access tokens, over TLS.

With ``KAFKA_SECURITY_PROTOCOL=SASL_SSL`` (or ``SASL_PLAINTEXT`` inside a trusted
network) every producer and consumer of a service presents an access token of that
service's OAuth client for the audience ``KAFKA_OAUTH_AUDIENCE`` (``urn:bsopt:kafka`` by
default), fetched and refreshed by the same :class:`ClientCredentialsTokenProvider` that
signs its gRPC calls. The brokers validate it against the issuer's JWKS
(``sasl.oauthbearer.jwks.endpoint.url``, ``sasl.oauthbearer.expected.audience``) and map
its ``sub`` (the client id) to a principal; topic ACLs then allow one producer per topic
(:func:`bsopt_common.topics.producer_acls`). The embedded Tansu broker and the tests use
``PLAINTEXT`` on 127.0.0.1. docs/architecture.md lists the ACLs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from bsopt_common.settings import KAFKA_AUDIENCE

if TYPE_CHECKING:
    from bsopt_common.security.token_provider import ClientCredentialsTokenProvider
    from bsopt_common.settings import ServiceSettings

__all__ = ["KAFKA_AUDIENCE", "OAuthBearerTokenProvider", "kafka_client_options"]


class OAuthBearerTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's SASL/OAUTHBEARER callback: this service's client-credentials token for
    the Kafka audience (cached and refreshed before expiry by the provider)."""

    def __init__(self, provider: ClientCredentialsTokenProvider, audience: str = KAFKA_AUDIENCE):
        self.provider = provider
        self.audience = audience

    async def token(self) -> str:
        return await self.provider.token(self.audience)


def kafka_client_options(settings: ServiceSettings,
                         token_provider: ClientCredentialsTokenProvider | None) -> dict[str, Any]:
    """Keyword arguments for every ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` of a
    service: the security protocol, TLS context and SASL/OAUTHBEARER token callback that
    ``settings`` ask for. Raises RuntimeError for a SASL protocol without client
    credentials (nothing to authenticate with)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if protocol.startswith("SASL_"):
        if token_provider is None:
            raise RuntimeError(f"{settings.service_name}: KAFKA_SECURITY_PROTOCOL={protocol} needs the service's "
                               "OAuth client credentials (CLIENT_ID, CLIENT_SECRET) for SASL/OAUTHBEARER")
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = OAuthBearerTokenProvider(token_provider, settings.kafka_oauth_audience)
    return options

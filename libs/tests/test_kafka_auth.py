"""SASL/OAUTHBEARER for a real Kafka: the options every service's aiokafka clients get
from settings, and the token callback fetching the service's own client-credentials
token for the Kafka audience over real HTTP (the test issuer's token endpoint). The
suite's broker (embedded Tansu, or TEST_KAFKA_BOOTSTRAP_SERVERS) runs PLAINTEXT, which
every integration test exercises."""

from __future__ import annotations

import ssl

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bsopt_common.kafka_auth import KAFKA_AUDIENCE, OAuthBearerTokenProvider, kafka_client_options
from bsopt_common.security import ClientCredentialsTokenProvider
from bsopt_common.security.jwt import AccessTokenVerifier, JWKSCache
from bsopt_common.settings import ServiceSettings


def test_plaintext_adds_nothing_but_the_protocol():
    assert kafka_client_options(ServiceSettings(), None) == {"security_protocol": "PLAINTEXT"}


def test_protocol_comes_from_the_unprefixed_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert ServiceSettings().kafka_security_protocol == "SASL_SSL"
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "KERBEROS")
    with pytest.raises(ValueError):
        ServiceSettings()


def test_sasl_without_client_credentials_is_refused():
    with pytest.raises(RuntimeError, match="SASL/OAUTHBEARER"):
        kafka_client_options(ServiceSettings(kafka_security_protocol="SASL_SSL"), None)


async def test_sasl_ssl_presents_the_services_own_token_for_the_kafka_audience(test_issuer):
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "ml-scorer", "dev-ml-scorer-secret")
    verifier = AccessTokenVerifier(test_issuer.issuer, KAFKA_AUDIENCE, JWKSCache(test_issuer.jwks_url))
    try:
        options = kafka_client_options(ServiceSettings(kafka_security_protocol="SASL_SSL"), provider)
        assert options["sasl_mechanism"] == "OAUTHBEARER"
        assert isinstance(options["ssl_context"], ssl.SSLContext)
        callback = options["sasl_oauth_token_provider"]
        assert isinstance(callback, OAuthBearerTokenProvider)
        claims = await verifier.verify(await callback.token(), ())
        assert (claims.client_id, claims.subject) == ("ml-scorer", "ml-scorer")
        # aiokafka accepts the combination (it validates protocol, mechanism and callback)
        AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **options)
        AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g", **options)
    finally:
        await provider.aclose()
        await verifier.jwks.aclose()

"""Kafka settings: validation, secrets kept out of reprs, and the mapping to each client."""

import pytest

from streamlearn.errors import ConfigError
from streamlearn.settings import load_settings
from streamlearn.worker.kafka import confluent as kafka_confluent
from streamlearn.worker.kafka import kafka_python

SECURE = {
    "bootstrap_servers": ["b1:9093", "b2:9093"],
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "learner",
    "sasl_password": "s3cret",
    "ssl_cafile": "/etc/ca.pem",
    "ssl_certfile": "/etc/client.pem",
    "ssl_keyfile": "/etc/client.key",
    "ssl_key_password": "k3y",
}


def test_secrets_never_show_in_reprs():
    kafka = load_settings(kafka=SECURE).kafka
    assert "s3cret" not in repr(kafka) and "k3y" not in repr(kafka)
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == "s3cret"


def test_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_PASSWORD", "from-env")
    settings = load_settings(kafka={k: v for k, v in SECURE.items() if k != "sasl_password"})
    assert settings.kafka.sasl_password.get_secret_value() == "from-env"


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "sasl_username"),
        ({"heartbeat_interval_ms": 50_000}, "heartbeat_interval_ms"),
        ({"client": "librdkafka"}, "kafka.client"),
    ],
)
def test_inconsistent_settings_name_the_key(kafka, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(kafka=kafka)


def test_kafka_python_names():
    config = kafka_python.connection_config(load_settings(kafka=SECURE).kafka)
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("learner", "s3cret")
    assert config["ssl_cafile"] == "/etc/ca.pem" and config["ssl_password"] == "k3y"
    assert (config["ssl_certfile"], config["ssl_keyfile"]) == ("/etc/client.pem", "/etc/client.key")


def test_librdkafka_names():
    config = kafka_confluent.connection_config(load_settings(kafka=SECURE).kafka)
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"
    assert (config["sasl.username"], config["sasl.password"]) == ("learner", "s3cret")
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert config["ssl.certificate.location"] == "/etc/client.pem"
    assert config["ssl.key.location"] == "/etc/client.key"
    assert config["ssl.key.password"] == "k3y"


def _consumer_config(monkeypatch, **kafka):
    """The configuration a ConfluentReader hands librdkafka's Consumer (none is started)."""
    made = []
    monkeypatch.setattr(kafka_confluent, "Consumer", made.append)
    kafka_confluent.ConfluentReader(load_settings(kafka=kafka).kafka)
    (config,) = made
    return config


def test_confluent_reader_refetches_soon_after_its_queue_filled(monkeypatch):
    # librdkafka's own default postpones the next fetch by 1,000 ms once the local queue is
    # full: a fast consumer drains it and waits (the catch-up stall of decision 0060)
    config = _consumer_config(monkeypatch)
    assert config["fetch.queue.backoff.ms"] == 10
    assert config["enable.auto.commit"] is False


def test_client_options_override_the_readers_defaults(monkeypatch):
    options = {"fetch.queue.backoff.ms": 250, "queued.min.messages": 5000}
    config = _consumer_config(monkeypatch, client_options=options)
    assert config["fetch.queue.backoff.ms"] == 250 and config["queued.min.messages"] == 5000


SPLIT_OPTIONS = {
    "client_options": {"client_id": "both", "request_timeout_ms": 40_000},
    "consumer_options": {"fetch_max_bytes": 1 << 20, "request_timeout_ms": 41_000},
    "producer_options": {"linger_ms": 50},
}


def _client_configs(monkeypatch, module, consumer: str, producer: str, **kafka):
    """The configurations a reader and a writer of ``module``'s client hand their consumer and
    producer classes (none is started)."""
    made: dict[str, dict] = {}

    def factory(role):
        def build(*config, **keywords):  # confluent passes a dict, kafka-python keywords
            made[role] = config[0] if config else keywords

        return build

    monkeypatch.setattr(module, consumer, factory("consumer"))
    monkeypatch.setattr(module, producer, factory("producer"))
    settings = load_settings(kafka=kafka).kafka
    if module is kafka_python:
        monkeypatch.setattr(kafka_python, "install", lambda consumer: False)
        kafka_python.KafkaPythonReader(settings), kafka_python.KafkaPythonWriter(settings)
    else:
        kafka_confluent.ConfluentReader(settings), kafka_confluent.ConfluentWriter(settings)
    return made["consumer"], made["producer"]


@pytest.mark.parametrize(
    ("module", "consumer", "producer"),
    [(kafka_python, "KafkaConsumer", "KafkaProducer"), (kafka_confluent, "Consumer", "Producer")],
)
def test_consumer_and_producer_options_reach_only_their_client(
    monkeypatch, module, consumer, producer
):
    reader, writer = _client_configs(monkeypatch, module, consumer, producer, **SPLIT_OPTIONS)
    assert reader["client_id"] == writer["client_id"] == "both"  # client_options: both
    assert reader["fetch_max_bytes"] == 1 << 20 and "fetch_max_bytes" not in writer
    assert writer["linger_ms"] == 50 and "linger_ms" not in reader
    assert reader["request_timeout_ms"] == 41_000  # the consumer's own over client_options
    assert writer["request_timeout_ms"] == 40_000


@pytest.mark.parametrize(
    ("options", "client"),
    [({"fetch_max_bytes": 1 << 20}, "KafkaProducer"), ({"linger_ms": 50}, "KafkaConsumer")],
)
def test_a_setting_of_one_kafka_python_client_in_client_options_is_a_config_error(options, client):
    # kafka-python refuses a setting it does not know, before it connects: the message says
    # which client refused it and where such a setting belongs
    settings = load_settings(
        kafka={"bootstrap_servers": ["127.0.0.1:1"], "client_options": options}
    )
    build = (
        kafka_python.KafkaPythonWriter
        if client == "KafkaProducer"
        else kafka_python.KafkaPythonReader
    )
    with pytest.raises(ConfigError, match=f"Unrecognized configs.*{client}.*consumer_options"):
        build(settings.kafka)


def test_plaintext_has_no_security_keys():
    config = kafka_python.connection_config(load_settings().kafka)
    assert not any(k.startswith(("sasl", "ssl")) for k in config)


def test_source_kind_kafka_builds_a_kafka_source():
    from streamlearn.app import build_source
    from streamlearn.worker.kafka.source import KafkaSource

    assert isinstance(build_source(load_settings(source={"kind": "kafka"})), KafkaSource)


def test_confluent_without_the_package_is_a_config_error(monkeypatch):
    import sys

    from streamlearn.worker.kafka.client import open_reader

    monkeypatch.setitem(sys.modules, "streamlearn.worker.kafka.confluent", None)
    with pytest.raises(ConfigError, match="kafka-fast"):
        open_reader(load_settings(kafka={"client": "confluent"}).kafka)

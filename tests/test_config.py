"""Unit: settings from defaults, `.env` and the environment, and every invalid form."""

from dataclasses import fields

import pytest

from utils.utils_config import ConfigError, Settings, load_settings, read_env_file


def write_env(tmp_path, text):
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    return env_file


def test_defaults_without_env_file(tmp_path):
    settings = load_settings(env_file=tmp_path / "missing.env", environ={})
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.topic == "machine-sensors"
    assert settings.consumer_window == 60
    assert settings.producer_interval_s == 1.0


def test_env_file_sets_values(tmp_path):
    env_file = write_env(tmp_path, "KAFKA_TOPIC=plant-a\nCONSUMER_WINDOW=30\n")
    settings = load_settings(env_file=env_file, environ={})
    assert settings.topic == "plant-a"
    assert settings.consumer_window == 30


def test_environment_wins_over_env_file(tmp_path):
    env_file = write_env(tmp_path, "KAFKA_TOPIC=from-file\n")
    settings = load_settings(env_file=env_file, environ={"KAFKA_TOPIC": "from-environment"})
    assert settings.topic == "from-environment"


def test_overrides_win_over_environment(tmp_path):
    settings = load_settings(env_file=tmp_path / "none", environ={"KAFKA_TOPIC": "env"}, topic="flag")
    assert settings.topic == "flag"


def test_comment_only_value_counts_as_unset(tmp_path):
    env_file = write_env(tmp_path, "KAFKA_TOPIC= # set this later\nCONSUMER_WINDOW=   #x\n")
    assert read_env_file(env_file) == {}
    settings = load_settings(env_file=env_file, environ={})
    assert settings.topic == "machine-sensors"
    assert settings.consumer_window == 60


def test_inline_comment_after_value_ignored(tmp_path):
    env_file = write_env(tmp_path, "CONSUMER_WINDOW=30 # readings\n")
    assert load_settings(env_file=env_file, environ={}).consumer_window == 30


@pytest.mark.parametrize("key, value, expected", [
    ("KAFKA_TOPIC", "", "Kafka topic name"),
    ("KAFKA_TOPIC", "bad topic!", "Kafka topic name"),
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost:99999", "port from 1 to 65535"),
    ("KAFKA_TOPIC_PARTITIONS", "0", "at least 1"),
    ("KAFKA_SECURITY_PROTOCOL", "TLS", "one of PLAINTEXT"),
    ("KAFKA_SASL_MECHANISM", "GSSAPI", "one of PLAIN"),
    ("PRODUCER_INTERVAL_S", "fast", "a number"),
    ("PRODUCER_INTERVAL_S", "0", "greater than 0"),
    ("PRODUCER_INTERVAL_S", "nan", "finite"),
    ("PRODUCER_FAULT_RATE", "1.5", "probability"),
    ("PRODUCER_MACHINES", "2.5", "whole number"),
    ("CONSUMER_WINDOW", "-3", "at least 2"),
    ("SQLITE_BUSY_TIMEOUT_MS", "-1", "at least 0"),
    ("VALID_TEMPERATURE_C", "400,-50", "LOW below HIGH"),
    ("VALID_PRESSURE_KPA", "zero", "LOW,HIGH"),
    ("LOG_LEVEL", "LOUD", "one of TRACE"),
])
def test_invalid_value_names_key_and_value(key, value, expected):
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file="/nonexistent/.env", environ={key: value})
    message = str(raised.value)
    assert key in message
    assert repr(value) in message
    assert expected in message


def test_every_setting_rejects_garbage():
    """Each key either rejects a nonsense value with its name, or takes any text by design."""
    free_text = {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_PASSWORD", "KAFKA_CLIENT_ID",
                 "CONSUMER_GROUP_ID", "SQLITE_PATH", "LOG_DIR", "KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE",
                 "KAFKA_SSL_KEYFILE", "SMTP_HOST", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_CAFILE",
                 "ALERT_EMAIL_FROM", "ALERT_EMAIL_TO"}
    for spec in fields(Settings):
        key = spec.metadata["env"]
        if key in free_text:
            continue
        with pytest.raises(ConfigError, match=key):
            load_settings(env_file="/nonexistent/.env", environ={key: "§garbage§"})


def test_secret_masked_in_error_and_repr():
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file="/nonexistent/.env", environ={
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "", "KAFKA_SASL_PASSWORD": "hunter2"})
    assert "hunter2" not in str(raised.value)

    settings = load_settings(env_file="/nonexistent/.env", environ={
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "plant", "KAFKA_SASL_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert settings.masked()["KAFKA_SASL_PASSWORD"] == "*****"
    assert settings.secrets() == ["hunter2"]


def test_sasl_without_mechanism_rejected():
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM"):
        load_settings(env_file="/nonexistent/.env", environ={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


def test_missing_ssl_file_rejected():
    with pytest.raises(ConfigError, match="KAFKA_SSL_CAFILE"):
        load_settings(env_file="/nonexistent/.env", environ={"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"})


def test_min_isr_above_replication_rejected():
    with pytest.raises(ConfigError, match="KAFKA_MIN_INSYNC_REPLICAS"):
        load_settings(env_file="/nonexistent/.env", environ={"KAFKA_MIN_INSYNC_REPLICAS": "2"})


def test_env_example_lists_every_setting():
    from utils.utils_config import PROJECT_ROOT
    example = read_env_file(PROJECT_ROOT / ".env.example")
    keys = [spec.metadata["env"] for spec in fields(Settings)]
    assert sorted(example) == sorted(keys)
    load_settings(env_file=PROJECT_ROOT / ".env.example", environ={})


def test_missing_smtp_cafile_rejected():
    with pytest.raises(ConfigError, match="SMTP_CAFILE"):
        load_settings(env_file="/nonexistent/.env", environ={"SMTP_CAFILE": "/nonexistent/ca.pem"})


def test_ssl_password_without_keyfile_rejected():
    with pytest.raises(ConfigError, match="KAFKA_SSL_KEYFILE") as raised:
        load_settings(env_file="/nonexistent/.env", environ={"KAFKA_SSL_PASSWORD": "key-secret"})
    assert "key-secret" not in str(raised.value)

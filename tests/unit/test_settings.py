import pytest

from core.settings import SettingsError, load_settings


def test_defaults_run_locally() -> None:
    settings = load_settings({})
    assert settings.env == "dev"
    assert settings.holds.ttl_s == 600
    assert settings.holds.max_seats_per_buyer == 6
    assert settings.redis.startup_nodes()[0] == ("127.0.0.1", 7101)
    # A deployment that forgets its settings must not mint tokens for anyone.
    assert settings.auth.dev_issuer_enabled is False


def test_variables_override_their_section() -> None:
    settings = load_settings(
        {
            "TB_HOLDS_TTL_S": "30",
            "TB_DATABASE_URL": "postgresql://db.invalid/x",
            "TB_KAFKA_IDEMPOTENT_PRODUCER": "true",
            "TB_REDIS_CLUSTER_NODES": "10.0.0.1:7000, 10.0.0.2:7001",
            "UNRELATED": "ignored",
        }
    )
    assert settings.holds.ttl_s == 30
    assert settings.database.url == "postgresql://db.invalid/x"
    assert settings.kafka.idempotent_producer is True
    assert settings.redis.startup_nodes() == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="TB_API_PORT"):
        load_settings({"TB_API_PORT": "eighty"})


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(SettingsError, match="TB_ENV"):
        load_settings({"TB_ENV": "staging"})


def test_prod_refuses_the_dev_issuer() -> None:
    with pytest.raises(SettingsError, match="TB_AUTH_DEV_ISSUER_ENABLED"):
        load_settings({"TB_ENV": "prod", "TB_AUTH_DEV_ISSUER_ENABLED": "true"})
    with pytest.raises(SettingsError, match="TB_AUTH_ISSUER"):
        load_settings({"TB_ENV": "prod"})  # the dev issuer is off unless asked for
    with pytest.raises(SettingsError, match="TB_AUTH_ISSUER"):
        load_settings({"TB_ENV": "prod", "TB_AUTH_DEV_ISSUER_ENABLED": "false"})
    prod = load_settings(
        {
            "TB_ENV": "prod",
            "TB_AUTH_DEV_ISSUER_ENABLED": "false",
            "TB_AUTH_ISSUER": "https://id.example.com/realms/tb",
            "TB_PAYMENTS_PROVIDER": "stripe",
        }
    )
    assert prod.auth.dev_issuer_enabled is False


def test_prod_refuses_the_simulated_payment_provider() -> None:
    prod = {"TB_ENV": "prod", "TB_AUTH_ISSUER": "https://id.example.com/realms/tb"}
    with pytest.raises(SettingsError, match="TB_PAYMENTS_PROVIDER"):
        load_settings(prod)
    assert load_settings({**prod, "TB_PAYMENTS_PROVIDER": "stripe"}).payments.provider == "stripe"


def test_the_api_refuses_prod_settings_that_would_misbehave_naming_the_variable() -> None:
    from api.startup import check_api_settings

    prod = {
        "TB_ENV": "prod",
        "TB_AUTH_ISSUER": "https://id.example.com/realms/tb",
        "TB_PAYMENTS_PROVIDER": "stripe",
        "TB_API_CORS_ORIGINS": "https://tickets.example.com",
        "TB_TICKETS_PUBLIC_KEYS_PATH": "/etc/ticketbuster/ticket-keys/public-keys.pem",
    }
    # Behind an ingress with no trusted proxy every buyer would share one per-IP budget.
    with pytest.raises(SettingsError, match="TB_API_TRUSTED_PROXIES: must be set"):
        check_api_settings(load_settings(prod))
    with pytest.raises(SettingsError, match="TB_API_TRUSTED_PROXIES"):
        check_api_settings(load_settings({**prod, "TB_API_TRUSTED_PROXIES": "10.0.0.0/33"}))
    with pytest.raises(SettingsError, match="TB_API_CORS_ORIGINS: http://localhost:8000"):
        check_api_settings(
            load_settings(
                {
                    **prod,
                    "TB_API_TRUSTED_PROXIES": "none",
                    "TB_API_CORS_ORIGINS": "http://localhost:8000",
                }
            )
        )
    check_api_settings(load_settings({**prod, "TB_API_TRUSTED_PROXIES": "10.42.0.0/16"}))
    check_api_settings(load_settings({**prod, "TB_API_TRUSTED_PROXIES": "none"}))
    # Only the issuer holds the private key: the API must be given the public one.
    with pytest.raises(SettingsError, match="TB_TICKETS_PUBLIC_KEYS_PATH"):
        check_api_settings(
            load_settings(
                {**prod, "TB_API_TRUSTED_PROXIES": "none", "TB_TICKETS_PUBLIC_KEYS_PATH": ""}
            )
        )
    # Outside prod the defaults start (no proxy, loopback origins); a typo still does not.
    check_api_settings(load_settings({}))
    with pytest.raises(SettingsError, match="TB_API_TRUSTED_PROXIES"):
        check_api_settings(load_settings({"TB_API_TRUSTED_PROXIES": "proxy.local"}))

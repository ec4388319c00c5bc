"""Settings: YAML plus GATEWAY_* environment, one-line errors naming the setting and the value,
the development secret, and secrets kept out of repr()."""

from __future__ import annotations

import ipaddress
import os
import stat
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import settings as settings_module
from gateway.settings import Settings, SettingsError, load_settings, with_secret

SECRET = "s" * 40
KEK = "ab" * 32


def write_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keygate.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def error(environ: dict[str, str], config: str | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(config, environ=environ)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- sources and precedence -------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    """With nothing configured: production, SQLite under var/, no Redis, no secret yet."""
    s = load_settings(None, environ={})
    assert s.mode == "production"
    assert s.database_url == "sqlite:///var/keygate.db"
    assert s.redis_url is None
    assert s.secret == b""
    assert s.listen == "127.0.0.1:8080"
    assert s.key_prefix == "apk"
    assert s.retrievable_keys is False
    assert s.accept_legacy_keys is False
    assert (s.key_max_failures, s.key_failure_window) == (20, 60.0)


def test_key_budget_settings_are_read_from_the_environment() -> None:
    """GATEWAY_KEY_MAX_FAILURES and GATEWAY_KEY_FAILURE_WINDOW set the failed-key budget."""
    s = load_settings(
        None, environ={"GATEWAY_KEY_MAX_FAILURES": "3", "GATEWAY_KEY_FAILURE_WINDOW": "2.5"}
    )
    assert (s.key_max_failures, s.key_failure_window) == (3, 2.5)


def test_yaml_then_environment_then_overrides(tmp_path: Path) -> None:
    """A YAML value is used unless GATEWAY_* sets it; a CLI override beats both."""
    config = write_yaml(
        tmp_path,
        """
        listen: 10.1.2.3:9000
        workers: 3
        log_level: debug
        database_url: postgresql://keygate@db.internal/keygate
        trusted_proxies: [10.0.0.0/8, "::1"]
        policy: [a.yaml, b.yaml]
        """,
    )
    s = load_settings(config, environ={"GATEWAY_WORKERS": "2", "GATEWAY_LOG_LEVEL": "warning"})
    assert (s.listen_host, s.listen_port) == ("10.1.2.3", 9000)
    assert s.workers == 2
    assert s.log_level == "WARNING"
    assert s.database_url == "postgresql://keygate@db.internal/keygate"
    assert s.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    assert s.policy == (Path("a.yaml"), Path("b.yaml"))
    over = load_settings(
        config,
        environ={"GATEWAY_LISTEN": "127.0.0.1:9001"},
        overrides={"listen": "[::1]:9002", "workers": None},
    )
    assert (over.listen_host, over.listen_port, over.listen) == ("::1", 9002, "[::1]:9002")
    assert over.workers == 3  # a None override (flag not given) changes nothing


def test_config_file_from_gateway_config(tmp_path: Path) -> None:
    """GATEWAY_CONFIG names the YAML file when no --config is given."""
    config = write_yaml(tmp_path, "mode: development\nkey_prefix: kg\n")
    s = load_settings(None, environ={"GATEWAY_CONFIG": config})
    assert (s.mode, s.key_prefix, s.development) == ("development", "kg", True)


def test_environment_lists_and_booleans() -> None:
    """Comma-separated lists and true/false words parse from the environment."""
    s = load_settings(
        None,
        environ={
            "GATEWAY_POLICY": "policies/a.yaml, policies/b.yaml",
            "GATEWAY_TRUSTED_PROXIES": "10.1.2.3,192.168.0.0/16",
            "GATEWAY_ACCESS_LOG": "yes",
            "GATEWAY_RETRIEVABLE_KEYS": "true",
            "GATEWAY_KEY_ENCRYPTION_KEY": KEK,
            "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/2",
        },
    )
    assert s.policy == (Path("policies/a.yaml"), Path("policies/b.yaml"))
    assert len(s.trusted_proxies) == 2
    assert s.access_log is True
    assert s.retrievable_keys is True
    assert s.key_encryption_key == bytes.fromhex(KEK)
    assert s.redis_url == "redis://127.0.0.1:6379/2"
    assert load_settings(None, environ={"GATEWAY_REDIS_URL": " "}).redis_url is None


def test_secret_from_environment_and_from_file(tmp_path: Path) -> None:
    """GATEWAY_SECRET is used as is; GATEWAY_SECRET_FILE is read with its newline stripped."""
    s = load_settings(None, environ={"GATEWAY_SECRET": SECRET})
    assert (s.secret, s.secret_source) == (SECRET.encode(), "GATEWAY_SECRET")
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    f = load_settings(None, environ={"GATEWAY_SECRET_FILE": str(path)})
    assert (f.secret, f.secret_source) == (SECRET.encode(), "GATEWAY_SECRET_FILE")


def test_key_encryption_key_from_file(tmp_path: Path) -> None:
    """GATEWAY_KEY_ENCRYPTION_KEY_FILE holds 64 hex characters: a 256-bit key."""
    path = tmp_path / "kek"
    path.write_text(KEK + "\n")
    s = load_settings(None, environ={"GATEWAY_KEY_ENCRYPTION_KEY_FILE": str(path)})
    assert s.key_encryption_key == bytes.fromhex(KEK)


# ---- every bad value: one line naming the setting and the value ---------------------------

# env suffix -> a bad value. Every setting must have one (see the completeness test below).
BAD_VALUES: dict[str, str] = {
    "mode": "prod",
    "database_url": "mysql://x",
    "redis_url": "http://cache.internal:6379",
    "redis_namespace": "two words",
    "workers": "0",
    "policy": " , ",
    "key_prefix": "A_B",
    "data_dir": "",
    "trusted_proxies": "10.0.0.0/33",
    "local_cache_ttl": "-1",
    "local_cache_size": "many",
    "redis_cache_ttl": "0.5",
    "negative_cache_ttl": "soon",
    "stale_window": "nan",
    "invalidation_poll_interval": "0",
    "store_backoff": "-1",
    "database_timeout": "0",
    "redis_timeout": "eleven",
    "retrievable_keys": "maybe",
    "accept_legacy_keys": "sometimes",
    "allow_insecure_redirects": "perhaps",
    "max_body_bytes": "10",
    "log_level": "LOUD",
    "access_log": "2",
    "fast_data_plane": "fast",
    "client_header_timeout": "0",
    "client_body_timeout": "never",
    "keepalive_timeout": "-5",
    "max_connections": "0",
    "max_header_count": "lots",
    "shutdown_timeout": "-1",
    "strip_request_headers": "X-Bad Name",
    "identity_assertion": "sometimes",
    "identity_assertion_ttl": "1",
    "session_ttl": "30",
    "login_max_failures": "0",
    "login_window": "inf",
    "key_max_failures": "-3",
    "key_failure_window": "0.5",
    "authorization_code_ttl": "-60",
    "reauthorize_grace": "604801",
    "leak_action": "delete",
    "secret_scanning_keys_file": "/nonexistent/keys.json",
    "secret_scanning_keys_url": "http://github.example/keys",
    "secret_scanning_replay_window": "10",
    "idle_key_days": "-1",
    "unused_permission_days": "0",
    "listen": "abc",
    "admin_listen": "127.0.0.1:port",
    "log_format": "xml",
    "tracing": "zipkin",
    "tracing_endpoint": "ftp://collector",
    "secret": "short",
    "secret_file": "/nonexistent/keygate-secret",
    "key_encryption_key": "not-hex",
    "key_encryption_key_file": "/nonexistent/keygate-kek",
    "previous_secrets": "a-previous-secret-that-is-short",
    "previous_secrets_file": "/nonexistent/keygate-previous",
    "accepted_key_prefixes": "Bad_Prefix",
    "legacy_ratelimit_headers": "often",
    "rate_limit_lease": "20000",
    "busy_poll_us": "10001",
    "listen_backlog": "0",
}
# Secret values must not be echoed: for these the message names the setting only.
SECRET_SETTINGS = {"secret", "key_encryption_key", "previous_secrets"}
# An empty value has nothing to echo.
BLANK = {"policy", "data_dir"}


def test_every_setting_has_a_bad_value_case() -> None:
    """The bad-value table below covers every setting the loader knows."""
    known = set(settings_module._PLAIN) | set(settings_module._SPECIAL)
    assert known - set(BAD_VALUES) == set(), "add a bad value for each new setting"


@pytest.mark.parametrize(("key", "value"), sorted(BAD_VALUES.items()))
def test_bad_environment_value_names_setting_and_value(key: str, value: str) -> None:
    """A bad GATEWAY_* value is an error naming the variable and, unless secret, the value."""
    message = error({f"GATEWAY_{key.upper()}": value})
    assert message.startswith(f"GATEWAY_{key.upper()}: ")
    if key in SECRET_SETTINGS:
        assert value not in message
    elif key not in BLANK:
        assert value in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("workers", "0"), ("listen", "abc"), ("mode", "prod"), ("log_level", "LOUD")],
)
def test_bad_yaml_value_names_file_and_key(tmp_path: Path, key: str, value: str) -> None:
    """A bad value in the YAML file names the file, the key and the value."""
    config = write_yaml(tmp_path, f"{key}: {value}\n")
    message = error({}, config)
    assert message.startswith(f"{config}: {key}: ")
    assert value in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("127.0.0.1:99999", "127.0.0.1:99999"),
        ("127.0.0.1:", "127.0.0.1:"),
        (":8080", ":8080"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ],
)
def test_bad_listen_addresses(value: str, shown: str) -> None:
    """host:port needs a host and a port between 1 and 65535."""
    message = error({"GATEWAY_LISTEN": value})
    assert message.startswith("GATEWAY_LISTEN: ")
    assert shown in message


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite:relative.db", "postgresql:///nohost", "keygate.db"]
)
def test_bad_database_urls(url: str) -> None:
    """Only sqlite:///path and postgresql://host/... are database URLs."""
    message = error({"GATEWAY_DATABASE_URL": url})
    assert message.startswith("GATEWAY_DATABASE_URL: ")
    assert url in message


def test_bad_database_url_hides_its_password() -> None:
    """A rejected database URL is shown without its password."""
    message = error({"GATEWAY_DATABASE_URL": "mysql://keygate:hunter2pass@db/keygate"})
    assert "hunter2pass" not in message
    assert "mysql://keygate:***@db/keygate" in message


def test_short_secret_is_refused_without_echoing_it() -> None:
    """A secret under 32 bytes is refused, naming the setting and the length, never the text."""
    message = error({"GATEWAY_SECRET": "tooshort-secret"})
    assert message.startswith("GATEWAY_SECRET: ")
    assert "32 bytes" in message
    assert "tooshort-secret" not in message


def test_short_secret_file_is_refused(tmp_path: Path) -> None:
    """A secret file holding under 32 bytes is refused, naming the setting."""
    path = tmp_path / "secret"
    path.write_text("abc\n")
    message = error({"GATEWAY_SECRET_FILE": str(path)})
    assert message.startswith("GATEWAY_SECRET_FILE: ")
    assert "32 bytes" in message


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_unreadable_secret_file(tmp_path: Path, kind: str) -> None:
    """A secret file that cannot be read names the setting, the path and the reason."""
    path = tmp_path / "nothere" if kind == "missing" else tmp_path
    message = error({"GATEWAY_SECRET_FILE": str(path)})
    assert message.startswith("GATEWAY_SECRET_FILE: cannot read ")
    assert str(path) in message


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    """Setting both the secret and a secret file is ambiguous: refused."""
    path = tmp_path / "secret"
    path.write_text(SECRET)
    message = error({"GATEWAY_SECRET": SECRET, "GATEWAY_SECRET_FILE": str(path)})
    assert "GATEWAY_SECRET" in message
    assert "GATEWAY_SECRET_FILE" in message
    assert SECRET not in message


def test_retrievable_keys_need_a_key_encryption_key() -> None:
    """Retrievable keys without a key-encryption key are refused, naming both settings."""
    message = error({"GATEWAY_RETRIEVABLE_KEYS": "true"})
    assert message.startswith("GATEWAY_RETRIEVABLE_KEYS: ")
    assert "GATEWAY_KEY_ENCRYPTION_KEY" in message


def test_short_key_encryption_key_is_refused() -> None:
    """A key-encryption key must be exactly 64 hex characters, and is never echoed."""
    message = error({"GATEWAY_KEY_ENCRYPTION_KEY": "ab" * 16})
    assert message.startswith("GATEWAY_KEY_ENCRYPTION_KEY: ")
    assert "ab" * 16 not in message


def test_insecure_redirects_only_in_development() -> None:
    """GATEWAY_ALLOW_INSECURE_REDIRECTS is refused outside development mode."""
    message = error({"GATEWAY_ALLOW_INSECURE_REDIRECTS": "true"})
    assert message.startswith("GATEWAY_ALLOW_INSECURE_REDIRECTS: ")
    dev = load_settings(
        None, environ={"GATEWAY_ALLOW_INSECURE_REDIRECTS": "1", "GATEWAY_MODE": "development"}
    )
    assert dev.allow_insecure_redirects is True


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    """A key the loader does not know (a typo) names the file and the key."""
    config = write_yaml(tmp_path, "listen: 127.0.0.1:8080\nworker: 4\n")
    assert error({}, config) == f"{config}: unknown setting 'worker'"


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    """A file that is not YAML names the file and the line."""
    config = write_yaml(tmp_path, "listen: 127.0.0.1:8080\nmode: [development\n")
    message = error({}, config)
    assert message.startswith(config)
    assert "not valid YAML" in message
    assert "line" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    """A YAML list or scalar is not a settings file."""
    config = write_yaml(tmp_path, "- listen\n- mode\n")
    assert error({}, config) == f"{config}: expected a mapping of settings"


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    """An empty settings file is allowed and changes nothing."""
    config = write_yaml(tmp_path, "# nothing yet\n")
    assert load_settings(config, environ={}) == load_settings(None, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that cannot be read names its path."""
    path = str(tmp_path / "absent.yaml")
    message = error({"GATEWAY_CONFIG": path})
    assert path in message
    assert "cannot read" in message


def test_yaml_value_of_the_wrong_type(tmp_path: Path) -> None:
    """A mapping where text is expected names the key."""
    config = write_yaml(tmp_path, "database_url:\n  host: db\n")
    message = error({}, config)
    assert message.startswith(f"{config}: database_url: ")


# ---- the hashing secret -------------------------------------------------------------------


def test_production_refuses_to_start_without_a_secret() -> None:
    """In production mode a missing secret stops the start, naming GATEWAY_SECRET."""
    s = load_settings(None, environ={"GATEWAY_MODE": "production"})
    with pytest.raises(SettingsError, match=r"^GATEWAY_SECRET: not set"):
        with_secret(s, announce=print)


def test_development_creates_a_private_secret_once_and_reuses_it(tmp_path: Path) -> None:
    """Development mode creates data_dir/secret (mode 0600) once, says so, and reuses it."""
    data = tmp_path / "var" / "nested"
    s = load_settings(None, environ={"GATEWAY_MODE": "development", "GATEWAY_DATA_DIR": str(data)})
    said: list[str] = []
    first = with_secret(s, announce=said.append)
    path = data / "secret"
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first.secret) >= 32
    assert first.secret_source == str(path)
    assert len(said) == 1
    assert str(path) in said[0]
    assert first.secret.decode() not in said[0]
    second = with_secret(s, announce=said.append)
    assert second.secret == first.secret
    assert len(said) == 1  # reusing says nothing
    assert with_secret(first, announce=said.append) is first  # a secret given is kept as is


def test_development_keeps_an_explicit_secret(tmp_path: Path) -> None:
    """An explicit secret wins in development mode too: no file is created."""
    s = load_settings(
        None,
        environ={
            "GATEWAY_MODE": "development",
            "GATEWAY_DATA_DIR": str(tmp_path),
            "GATEWAY_SECRET": SECRET,
        },
    )
    assert with_secret(s, announce=print).secret == SECRET.encode()
    assert not (tmp_path / "secret").exists()


def test_development_refuses_a_damaged_secret_file(tmp_path: Path) -> None:
    """A development secret file that is too short is an error naming the file."""
    (tmp_path / "secret").write_text("short\n")
    s = load_settings(
        None, environ={"GATEWAY_MODE": "development", "GATEWAY_DATA_DIR": str(tmp_path)}
    )
    with pytest.raises(SettingsError) as info:
        with_secret(s, announce=print)
    assert str(tmp_path / "secret") in str(info.value)


@pytest.mark.parametrize("below", ["plain/var", "plain"])
def test_development_data_dir_that_cannot_be_created(tmp_path: Path, below: str) -> None:
    """A data folder that cannot be created is a SettingsError naming GATEWAY_DATA_DIR."""
    (tmp_path / "plain").write_text("a file, not a folder")
    data = tmp_path / below
    s = load_settings(None, environ={"GATEWAY_MODE": "development", "GATEWAY_DATA_DIR": str(data)})
    with pytest.raises(SettingsError) as info:
        with_secret(s, announce=print)
    assert str(info.value).startswith("GATEWAY_DATA_DIR: ")
    assert str(data) in str(info.value)


# ---- secrets stay out of repr -------------------------------------------------------------


def test_repr_shows_no_secret() -> None:
    """repr(settings) holds neither the secret, the key-encryption key nor URL passwords."""
    s = load_settings(
        None,
        environ={
            "GATEWAY_SECRET": SECRET,
            "GATEWAY_KEY_ENCRYPTION_KEY": KEK,
            "GATEWAY_RETRIEVABLE_KEYS": "true",
            "GATEWAY_DATABASE_URL": "postgresql://keygate:dbpass123@db/keygate",
            "GATEWAY_REDIS_URL": "redis://:redispass456@cache:6379/0",
        },
    )
    text = repr(s) + str(s)
    for secret in (SECRET, KEK, bytes.fromhex(KEK).hex(), repr(bytes.fromhex(KEK))):
        assert secret not in text
    assert "dbpass123" not in text
    assert "redispass456" not in text
    assert "postgresql://keygate:***@db/keygate" in text
    assert "listen_port=8080" in text


def test_settings_are_frozen() -> None:
    """Settings cannot change after loading."""
    s = Settings()
    with pytest.raises(AttributeError):
        s.mode = "development"  # type: ignore[misc]


# ---- call deadlines ---------------------------------------------------------------------


def test_call_deadlines_default_to_two_seconds_and_half_a_second() -> None:
    """Without configuration a database call is bounded at 2 s and a Redis call at 0.5 s."""
    s = load_settings(None, environ={})
    assert (s.database_timeout, s.redis_timeout) == (2.0, 0.5)


@pytest.mark.parametrize(
    ("key", "value"),
    [("database_timeout", "21"), ("redis_timeout", "5.5"), ("database_timeout", "0.01")],
)
def test_call_deadlines_out_of_range_are_refused(key: str, value: str) -> None:
    """A deadline too long to protect a request, or too short for a healthy server, is refused."""
    message = error({f"GATEWAY_{key.upper()}": value})
    assert message.startswith(f"GATEWAY_{key.upper()}: ")
    assert value in message


@given(st.floats(min_value=0.05, max_value=20.0))
def test_any_database_deadline_in_range_is_kept_exactly(seconds: float) -> None:
    """Every database_timeout within 0.05-20 s is taken as written."""
    s = load_settings(None, environ={"GATEWAY_DATABASE_TIMEOUT": repr(seconds)})
    assert s.database_timeout == seconds


@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0.05 <= x <= 5.0))
def test_any_redis_deadline_out_of_range_is_an_error(seconds: float) -> None:
    """Every redis_timeout outside 0.05-5 s (NaN and infinities included) is refused."""
    with pytest.raises(SettingsError, match=r"^GATEWAY_REDIS_TIMEOUT: "):
        load_settings(None, environ={"GATEWAY_REDIS_TIMEOUT": repr(seconds)})


# ---- previous secrets and accepted key prefixes ---------------------------------------------

OLD_A = "a" * 32
OLD_B = "b" * 40


@pytest.mark.parametrize(
    "text", [f"{OLD_A},{OLD_B}", f"{OLD_A}\n{OLD_B}\n", f" {OLD_A} ,\n{OLD_B}"]
)
def test_previous_secrets_from_environment(text: str) -> None:
    """GATEWAY_PREVIOUS_SECRETS is comma- or newline-separated; blanks around entries go."""
    s = load_settings(None, environ={"GATEWAY_PREVIOUS_SECRETS": text})
    assert s.previous_secrets == (OLD_A.encode(), OLD_B.encode())


def test_previous_secrets_from_file_and_yaml(tmp_path: Path) -> None:
    """previous_secrets_file holds one secret per line; YAML takes a list; duplicates go."""
    path = tmp_path / "previous"
    path.write_text(f"{OLD_A}\n{OLD_B}\n{OLD_A}\n")
    s = load_settings(None, environ={"GATEWAY_PREVIOUS_SECRETS_FILE": str(path)})
    assert s.previous_secrets == (OLD_A.encode(), OLD_B.encode())
    config = write_yaml(tmp_path, f"previous_secrets: [{OLD_B}, {OLD_A}]\n")
    assert load_settings(config, environ={}).previous_secrets == (OLD_B.encode(), OLD_A.encode())


def test_short_previous_secret_is_refused_without_echoing_any(tmp_path: Path) -> None:
    """A previous secret under 32 bytes names its position and length, never any secret."""
    message = error({"GATEWAY_PREVIOUS_SECRETS": f"{OLD_A},tooshort-old"})
    assert message.startswith("GATEWAY_PREVIOUS_SECRETS: secret 2 is 12 bytes")
    assert OLD_A not in message
    assert "tooshort-old" not in message
    config = write_yaml(tmp_path, "previous_secrets: [true]\n")
    assert "secret 1 is not text" in error({}, config)


def test_previous_secrets_exclude_the_current_one() -> None:
    """Listing the current secret among the previous ones is refused, echoing neither."""
    message = error({"GATEWAY_SECRET": SECRET, "GATEWAY_PREVIOUS_SECRETS": f"{OLD_A},{SECRET}"})
    assert message.startswith("previous_secrets: ")
    assert SECRET not in message


def test_previous_secrets_and_file_together_are_refused(tmp_path: Path) -> None:
    """Setting both previous_secrets and previous_secrets_file is ambiguous: refused."""
    path = tmp_path / "previous"
    path.write_text(OLD_A)
    message = error({"GATEWAY_PREVIOUS_SECRETS": OLD_B, "GATEWAY_PREVIOUS_SECRETS_FILE": str(path)})
    assert "GATEWAY_PREVIOUS_SECRETS_FILE" in message
    assert OLD_A not in message
    assert OLD_B not in message


def test_previous_secrets_stay_out_of_repr() -> None:
    """repr(settings) never shows a previous secret."""
    s = load_settings(None, environ={"GATEWAY_PREVIOUS_SECRETS": OLD_A})
    assert OLD_A not in repr(s)
    assert "previous_secrets" not in repr(s)


def test_accepted_key_prefixes() -> None:
    """accepted_key_prefixes: a comma list or a YAML list of prefixes; the current one refused."""
    s = load_settings(None, environ={"GATEWAY_ACCEPTED_KEY_PREFIXES": "old, older,old"})
    assert s.accepted_key_prefixes == ("old", "older")
    assert load_settings(None, environ={}).accepted_key_prefixes == ()
    message = error({"GATEWAY_KEY_PREFIX": "kg", "GATEWAY_ACCEPTED_KEY_PREFIXES": "apk,kg"})
    assert message.startswith("accepted_key_prefixes: 'kg' is the current key_prefix")


def test_rate_limit_settings_read_from_the_environment() -> None:
    """`rate_limit_lease` takes 0..10000 (negative and non-numeric are refused with the
    bad-value table); `legacy_ratelimit_headers` a boolean."""
    assert error({"GATEWAY_RATE_LIMIT_LEASE": "-1"}).startswith("GATEWAY_RATE_LIMIT_LEASE: ")
    assert error({"GATEWAY_RATE_LIMIT_LEASE": "many"}).startswith("GATEWAY_RATE_LIMIT_LEASE: ")


def test_observability_settings() -> None:
    """admin_listen, log_format and tracing parse, default off, and the admin port must differ."""
    s = load_settings(environ={})
    assert (s.admin_listen, s.log_format, s.tracing) == (None, "text", "off")
    s = load_settings(
        environ={
            "GATEWAY_ADMIN_LISTEN": "127.0.0.1:9090",
            "GATEWAY_LOG_FORMAT": "JSON",
            "GATEWAY_TRACING": "console",
        }
    )
    assert (s.admin_listen, s.admin_listen_port, s.log_format, s.tracing) == (
        "127.0.0.1:9090",
        9090,
        "json",
        "console",
    )
    message = error({"GATEWAY_LISTEN": "127.0.0.1:9000", "GATEWAY_ADMIN_LISTEN": "0.0.0.0:9000"})
    assert message.startswith("admin_listen: ")
    assert "port of its own" in message

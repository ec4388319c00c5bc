"""Settings: a YAML file plus `GATEWAY_*` environment overrides, read once and frozen.

This is the only module that reads `os.environ`. Every error names the setting and the bad
value in one line, so a broken deployment says what to fix before it serves anything.

Precedence: environment variable > YAML file (`--config` / `GATEWAY_CONFIG`) > default.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from gateway.keys.format import validate_prefix
from gateway.secret_list import SecretListError, secret_list

Mode = Literal["development", "production"]
MAX_LEASE = 10_000
MAX_BUSY_POLL = 10_000  # µs: a longer window is just a hot loop
LogFormat = Literal["text", "json"]
Tracing = Literal["off", "console", "otlp"]
DEV_SECRET_FILE = "secret"  # noqa: S105 - a file name, not a secret


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it and its value."""


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode = "production"
    database_url: str = "sqlite:///var/keygate.db"
    redis_url: str | None = None
    # Prefix of every Redis key and channel name, so deployments sharing a Redis keep apart.
    redis_namespace: str = "keygate"
    secret: bytes = field(default=b"", repr=False)
    secret_source: str = ""
    # Secrets keys were hashed with before `secret` (rotation); tried only on a lookup miss.
    previous_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    # Connections the kernel queues on the listening socket before a worker accepts them (both
    # servers; Linux caps it at net.core.somaxconn). Beyond it SYNs are dropped and clients
    # retry after 1 s, then 3 s.
    listen_backlog: int = 1024
    workers: int = 1
    policy: tuple[Path, ...] = (Path("policies/example.yaml"),)
    key_prefix: str = "apk"
    # Former key prefixes whose keys are still accepted after a prefix change.
    accepted_key_prefixes: tuple[str, ...] = ()
    # Keys imported from BTCPay Server (40 hex characters, no prefix or checksum) are
    # verified like the others. Off by default: a deployment that never imported keeps
    # refusing any string without our prefix and checksum offline, with no lookup.
    accept_legacy_keys: bool = False
    data_dir: Path = Path("var")
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    local_cache_ttl: float = 5.0
    local_cache_size: int = 100_000
    redis_cache_ttl: float = 300.0
    negative_cache_ttl: float = 5.0
    stale_window: float = 60.0
    # Every instance reads the database's invalidation log this often: the bound on how long
    # an acknowledged change takes to reach an instance when Redis is down or hung.
    invalidation_poll_interval: float = 1.0
    store_backoff: float = 1.0
    # Deadlines on every call to the database and to Redis, so a server that hangs (rather
    # than refusing connections) costs a request at most this long. The database's covers
    # connecting, taking a pooled connection and each statement; on SQLite it is the busy
    # timeout. Redis's covers connecting and each command.
    database_timeout: float = 2.0
    redis_timeout: float = 0.5
    retrievable_keys: bool = False
    key_encryption_key: bytes | None = field(default=None, repr=False)
    allow_insecure_redirects: bool = False
    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    access_log: bool = False
    # A second listener for /metrics, /v1/admin, /docs and /openapi.json; when set, the public
    # listener no longer serves them (gateway/admin_listener.py).
    admin_listen_host: str | None = None
    admin_listen_port: int | None = None
    # OpenTelemetry spans (the optional `keygate[otel]` extra): off, console or otlp.
    tracing: Tracing = "off"
    tracing_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # The data plane on its own lean HTTP/1.1 front (gateway/proxy/front.py); false: aiohttp's.
    fast_data_plane: bool = True
    # Client-side deadlines and caps (both servers): a hostile client costs bounded time,
    # memory and file descriptors. See the README's configuration reference.
    client_header_timeout: float = 10.0  # the whole request head must arrive within this
    client_body_timeout: float = 30.0  # longest wait between two reads of a request body
    keepalive_timeout: float = 75.0  # idle time allowed between two requests
    max_connections: int = 10_000  # open client connections per worker; beyond: closed at once
    max_header_count: int = 100  # header fields in one request head; more: 431
    # After each request, the fast front's loop keeps polling this long (µs) before it
    # sleeps: lower latency at low load for CPU time (gateway/proxy/busy_poll.py). 0: off.
    busy_poll_us: int = 0
    # On SIGTERM/SIGINT the requests in flight get this long to finish (both servers); then
    # whatever is still open is cut and the worker exits.
    shutdown_timeout: float = 30.0
    # Extra request headers removed before forwarding, on top of the built-in list of headers
    # that re-route or re-method a request behind the gateway's back (proxy/headers.py).
    strip_request_headers: tuple[str, ...] = ()
    identity_assertion: bool = False
    identity_assertion_ttl: float = 60.0
    # Hosted pages: how long a login lasts, the login throttle, the authorize code lifetime.
    session_ttl: float = 12 * 3600.0
    login_max_failures: int = 5
    login_window: float = 300.0
    # Failed keys (unknown, malformed) per client address and window before 429, checked
    # before any lookup (gateway/keys/budget.py).
    key_max_failures: int = 20
    key_failure_window: float = 60.0
    authorization_code_ttl: float = 60.0
    # Rate limits (gateway/limits/): also answer the legacy X-RateLimit-Limit/Remaining/Reset.
    legacy_ratelimit_headers: bool = False
    # With Redis: requests' worth of a limit one instance may lease at once (0: every request
    # is one exact Redis call). See gateway/limits/redis_engine.py for what it trades.
    rate_limit_lease: int = 0
    # Re-authorizing an application rotates its previous key: the old key keeps working this
    # long (seconds, at most 7 days; 0: it stops at once) so the application can switch over.
    reauthorize_grace: float = 24 * 3600.0
    # Leaked keys (GitHub secret scanning partner endpoint, `gateway keys disclose`): what is
    # done to a reported key, the signing keys (GitHub's JSON format) from a file and/or a URL
    # refreshed when an unknown key signs, and how long reports are remembered against replay.
    leak_action: str = "revoke"
    secret_scanning_keys_file: Path | None = None
    secret_scanning_keys_url: str | None = None
    secret_scanning_replay_window: float = 24 * 3600.0
    # Keys unused (no request, and not created) for this many days are disabled; 0: never.
    idle_key_days: float = 0.0
    # A key's permission not used for this many days is "granted but unused" (least privilege).
    unused_permission_days: float = 30.0

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @property
    def admin_listen(self) -> str | None:
        if self.admin_listen_host is None:
            return None
        host = (
            f"[{self.admin_listen_host}]"
            if ":" in self.admin_listen_host
            else self.admin_listen_host
        )
        return f"{host}:{self.admin_listen_port}"

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    def __repr__(self) -> str:
        # Database and Redis URLs may carry a password: show them redacted, like errors do.
        shown = []
        for f in fields(self):
            if f.repr:
                value = getattr(self, f.name)
                if f.name in {"database_url", "redis_url"} and isinstance(value, str):
                    value = _redact(value)
                shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


# name -> (env var, parser). The YAML key is the name itself.
def _str(name: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise SettingsError(f"{name}: expected text, got {value!r}")
    return str(value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}: {value!r} is not a boolean (use true or false)")


def _number(name: str, value: Any, *, minimum: float, integer: bool = False) -> float:
    try:
        number = int(str(value)) if integer else float(str(value))
    except ValueError:
        raise SettingsError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(number):  # float() accepts "nan" and "inf"; no setting means them
        raise SettingsError(f"{name}: {value!r} is not a finite number")
    if number < minimum:
        raise SettingsError(f"{name}: {value!r} must be at least {minimum:g}")
    return number


def _listen(name: str, value: Any) -> tuple[str, int]:
    text = _str(name, value)
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name}: {text!r} is not host:port (e.g. 127.0.0.1:8080)")
    return host, int(port)


def _database_url(name: str, value: Any) -> str:
    text = _str(name, value)
    scheme = urlsplit(text).scheme
    if scheme == "sqlite" and text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    if scheme in {"postgresql", "postgres"} and urlsplit(text).hostname is not None:
        return text
    raise SettingsError(
        f"{name}: {_redact(text)!r} is not sqlite:///path or postgresql://user@host/db"
    )


def _redis_url(name: str, value: Any) -> str | None:
    text = _str(name, value).strip()
    if not text:
        return None
    if urlsplit(text).scheme not in {"redis", "rediss", "unix"}:
        raise SettingsError(f"{name}: {_redact(text)!r} is not a redis:// or rediss:// URL")
    return text


def _redis_namespace(name: str, value: Any) -> str:
    text = _str(name, value).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
        raise SettingsError(f"{name}: {text!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return text


def _folder(name: str, value: Any) -> Path:
    text = _str(name, value).strip()
    if not text:  # Path("") is the working folder: almost certainly not what was meant
        raise SettingsError(f"{name}: {value!r} is empty; name a folder, e.g. var")
    return Path(text)


def _redact(url: str) -> str:
    """A URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _read_secret_file(name: str, value: Any) -> bytes:
    path = Path(_str(name, value))
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {str(path)!r} ({exc.strerror})") from None
    return data


def _secret_bytes(name: str, data: bytes) -> bytes:
    if len(data) < 32:
        raise SettingsError(f"{name}: the secret must be at least 32 bytes (got {len(data)})")
    return data


def _kek(name: str, data: bytes) -> bytes:
    """A key-encryption key: 32 bytes as 64 hex characters."""
    try:
        raw = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SettingsError(f"{name}: expected 64 hex characters (a 256-bit key)")
    return raw


def _networks(name: str, value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = value if isinstance(value, list) else [s for s in str(value).split(",") if s.strip()]
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address or network") from None
    return tuple(out)


def _header_names(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}", text):
            raise SettingsError(f"{name}: {text!r} is not a header name")
        out.append(text.lower())
    return tuple(out)


def _policy(name: str, value: Any) -> tuple[Path, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    paths = tuple(Path(str(p).strip()) for p in items if str(p).strip())
    if not paths:
        raise SettingsError(f"{name}: no policy file or folder given")
    return paths


def _mode(name: str, value: Any) -> Mode:
    text = _str(name, value).strip().lower()
    if text == "development":
        return "development"
    if text == "production":
        return "production"
    raise SettingsError(f"{name}: {value!r} must be development or production")


def _log_level(name: str, value: Any) -> str:
    text = _str(name, value).strip().upper()
    if text not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"{name}: {value!r} must be DEBUG, INFO, WARNING or ERROR")
    return text


def _log_format(name: str, value: Any) -> LogFormat:
    text = _str(name, value).strip().lower()
    if text == "text":
        return "text"
    if text == "json":
        return "json"
    raise SettingsError(f"{name}: {value!r} must be text or json")


def _tracing(name: str, value: Any) -> Tracing:
    text = _str(name, value).strip().lower()
    if text in {"off", "false", "no", ""}:
        return "off"
    if text == "console":
        return "console"
    if text == "otlp":
        return "otlp"
    raise SettingsError(f"{name}: {value!r} must be off, console or otlp")


def _http_url(name: str, value: Any) -> str:
    text = _str(name, value).strip()
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"{name}: {_redact(text)!r} is not an http:// or https:// URL")
    return text


def _prefix(name: str, value: Any) -> str:
    try:
        return validate_prefix(_str(name, value))
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _prefixes(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(dict.fromkeys(_prefix(name, str(p).strip()) for p in items if str(p).strip()))


def _seconds(minimum: float) -> Callable[[str, Any], float]:
    return lambda name, value: _number(name, value, minimum=minimum)


def _deadline(maximum: float) -> Callable[[str, Any], float]:
    """A call deadline: long enough to be met by a healthy server, short enough that a hung
    one is noticed. The maxima keep a lookup in flight (database read, then Redis write) shorter
    than the shared cache's tombstones (cache/redis.py TOMBSTONE_SECONDS), which must outlive
    it."""

    def parse(name: str, value: Any) -> float:
        number = _number(name, value, minimum=0.05)
        if number > maximum:
            raise SettingsError(f"{name}: {value!r} must be at most {maximum:g}")
        return number

    return parse


def _bounded(minimum: float, maximum: float) -> Callable[[str, Any], float]:
    def parse(name: str, value: Any) -> float:
        number = _number(name, value, minimum=minimum)
        if number > maximum:
            raise SettingsError(f"{name}: {value!r} must be at most {maximum:g}")
        return number

    return parse


def _leak_action(name: str, value: Any) -> str:
    text = _str(name, value).strip().lower()
    if text not in {"revoke", "disable", "notify"}:
        raise SettingsError(f"{name}: {value!r} must be revoke, disable or notify")
    return text


def _scanning_keys_file(name: str, value: Any) -> Path | None:
    """A file of signing keys in GitHub's format, read and checked now (not at a report)."""
    text = _str(name, value).strip()
    if not text:
        return None
    from gateway.keys.leaks import PublicKeys

    path = Path(text)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {text!r} ({exc.strerror})") from None
    except ValueError:
        raise SettingsError(f"{name}: {text!r} is not a JSON document") from None
    try:
        PublicKeys.from_document(document)
    except ValueError as exc:
        raise SettingsError(f"{name}: {text!r}: {exc}") from None
    return path


def _scanning_keys_url(name: str, value: Any) -> str | None:
    text = _str(name, value).strip()
    if not text:
        return None
    parts = urlsplit(text)
    loopback = parts.hostname in {"127.0.0.1", "::1", "localhost"}
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise SettingsError(f"{name}: {text!r} must be an https:// URL")
    return text


def _count(minimum: int) -> Callable[[str, Any], int]:
    return lambda name, value: int(_number(name, value, minimum=minimum, integer=True))


def _count_within(minimum: int, maximum: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        count = int(_number(name, value, minimum=minimum, integer=True))
        if count > maximum:
            raise SettingsError(f"{name}: {value!r} must be at most {maximum}")
        return count

    return parse


# Every plain setting: YAML key -> parser. Its environment variable is GATEWAY_<KEY upper>.
_PLAIN: dict[str, Callable[[str, Any], Any]] = {
    "mode": _mode,
    "database_url": _database_url,
    "redis_url": _redis_url,
    "redis_namespace": _redis_namespace,
    "workers": _count(1),
    "listen_backlog": _count_within(1, 65535),
    "policy": _policy,
    "key_prefix": _prefix,
    "accepted_key_prefixes": _prefixes,
    "accept_legacy_keys": _bool,
    "data_dir": _folder,
    "trusted_proxies": _networks,
    "local_cache_ttl": _seconds(0),
    "local_cache_size": _count(1),
    "redis_cache_ttl": _seconds(1),
    "negative_cache_ttl": _seconds(0),
    "stale_window": _seconds(0),
    "invalidation_poll_interval": _seconds(0.05),
    "store_backoff": _seconds(0),
    "database_timeout": _deadline(20.0),
    "redis_timeout": _deadline(5.0),
    "retrievable_keys": _bool,
    "allow_insecure_redirects": _bool,
    "max_body_bytes": _count(1024),
    "log_level": _log_level,
    "log_format": _log_format,
    "tracing": _tracing,
    "tracing_endpoint": _http_url,
    "access_log": _bool,
    "fast_data_plane": _bool,
    "legacy_ratelimit_headers": _bool,
    "rate_limit_lease": _count_within(0, MAX_LEASE),
    "client_header_timeout": _seconds(0.1),
    "client_body_timeout": _seconds(0.1),
    "keepalive_timeout": _seconds(0.1),
    "max_connections": _count(1),
    "max_header_count": _count(1),
    "busy_poll_us": _count_within(0, MAX_BUSY_POLL),
    "shutdown_timeout": _seconds(0),
    "strip_request_headers": _header_names,
    "identity_assertion": _bool,
    "identity_assertion_ttl": _seconds(5),
    "session_ttl": _seconds(60),
    "login_max_failures": _count(1),
    "login_window": _seconds(1),
    "key_max_failures": _count(1),
    "key_failure_window": _seconds(1),
    "authorization_code_ttl": _seconds(1),
    "reauthorize_grace": _bounded(0, 7 * 86400.0),
    "leak_action": _leak_action,
    "secret_scanning_keys_file": _scanning_keys_file,
    "secret_scanning_keys_url": _scanning_keys_url,
    "secret_scanning_replay_window": _seconds(60),
    "idle_key_days": _bounded(0, 36500),
    "unused_permission_days": _bounded(1, 36500),
}
# Settings that are not plain fields: listen, secret(_file), key_encryption_key(_file).
_SPECIAL = {
    "listen",
    "admin_listen",
    "secret",
    "secret_file",
    "previous_secrets",
    "previous_secrets_file",
    "key_encryption_key",
    "key_encryption_key_file",
}


# Variables with the GATEWAY_ prefix that are not settings: the test suite's and the
# benchmarks' own (README, development), never read by the gateway.
_NOT_SETTINGS = ("GATEWAY_TEST_", "GATEWAY_BENCH_")


def env_name(key: str) -> str:
    return "GATEWAY_" + key.upper()


def environment_names() -> frozenset[str]:
    """Every environment variable the gateway reads."""
    return frozenset({"GATEWAY_CONFIG", *(env_name(k) for k in (*_PLAIN, *_SPECIAL))})


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line for each `GATEWAY_*` variable that is no setting (a misspelt one would
    otherwise be ignored in silence), with the closest real name when there is one."""
    env = os.environ if environ is None else environ
    known = environment_names()
    lines = []
    for name in sorted(env):
        if not name.startswith("GATEWAY_") or name in known or name.startswith(_NOT_SETTINGS):
            continue
        # Compared without the shared prefix, which would make every name look alike.
        suffixes = [k.removeprefix("GATEWAY_") for k in sorted(known)]
        close = difflib.get_close_matches(name.removeprefix("GATEWAY_"), suffixes, n=1, cutoff=0.7)
        hint = f"; did you mean GATEWAY_{close[0]}?" if close else ""
        lines.append(f"{name} is not a Keygate setting and is ignored{hint}")
    return lines


def load_settings(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the YAML file (if any), then the environment, then explicit overrides (CLI flags)."""
    env = os.environ if environ is None else environ
    path = config_file or env.get("GATEWAY_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        raw = _read_yaml(path)
    sources: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        if key not in _PLAIN and key not in _SPECIAL:
            raise SettingsError(f"{path}: unknown setting {key!r}")
        sources[key] = (f"{path}: {key}", value)
    for key in (*_PLAIN, *_SPECIAL):
        if env_name(key) in env:
            sources[key] = (env_name(key), env[env_name(key)])
    for key, value in (overrides or {}).items():
        if value is not None:
            sources[key] = (f"--{key.replace('_', '-')}", value)

    values: dict[str, Any] = {}
    for key, parse in _PLAIN.items():
        if key in sources:
            label, value = sources[key]
            values[key] = parse(label, value)
    if "listen" in sources:
        label, value = sources["listen"]
        values["listen_host"], values["listen_port"] = _listen(label, value)
    if "admin_listen" in sources:
        label, value = sources["admin_listen"]
        if str(value).strip():  # empty: unset
            values["admin_listen_host"], values["admin_listen_port"] = _listen(label, value)

    secret, secret_source = _load_secret(sources, values)
    values["secret"], values["secret_source"] = secret, secret_source
    values["previous_secrets"] = _load_previous_secrets(sources)
    values["key_encryption_key"] = _load_kek(sources)
    settings = Settings(**values)
    _check(settings)
    return settings


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"GATEWAY_CONFIG: cannot read {path!r} ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{path}:{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    return data


def _load_secret(
    sources: Mapping[str, tuple[str, Any]], values: Mapping[str, Any]
) -> tuple[bytes, str]:
    if "secret" in sources and "secret_file" in sources:
        raise SettingsError("GATEWAY_SECRET and GATEWAY_SECRET_FILE are both set; use one")
    if "secret" in sources:
        label, value = sources["secret"]
        return _secret_bytes(label, _str(label, value).encode("utf-8")), label
    if "secret_file" in sources:
        label, value = sources["secret_file"]
        return _secret_bytes(label, _read_secret_file(label, value)), label
    return b"", ""


def _load_previous_secrets(sources: Mapping[str, tuple[str, Any]]) -> tuple[bytes, ...]:
    if "previous_secrets" in sources and "previous_secrets_file" in sources:
        raise SettingsError(
            "GATEWAY_PREVIOUS_SECRETS and GATEWAY_PREVIOUS_SECRETS_FILE are both set; use one"
        )
    if "previous_secrets" in sources:
        label, value = sources["previous_secrets"]
    elif "previous_secrets_file" in sources:
        label, path = sources["previous_secrets_file"]
        value = _read_secret_file(label, path)
    else:
        return ()
    try:
        return secret_list(label, value)
    except SecretListError as exc:
        raise SettingsError(str(exc)) from None


def _load_kek(sources: Mapping[str, tuple[str, Any]]) -> bytes | None:
    if "key_encryption_key" in sources:
        label, value = sources["key_encryption_key"]
        return _kek(label, _str(label, value).encode("ascii", "replace"))
    if "key_encryption_key_file" in sources:
        label, value = sources["key_encryption_key_file"]
        return _kek(label, _read_secret_file(label, value))
    return None


def _check(s: Settings) -> None:
    if s.admin_listen_port is not None and s.admin_listen_port == s.listen_port:
        raise SettingsError(
            f"admin_listen: {s.admin_listen!r} uses the port of listen ({s.listen}); "
            "give the admin listener a port of its own"
        )
    if s.secret and s.secret in s.previous_secrets:
        raise SettingsError("previous_secrets: one of them is the current secret; remove it")
    if s.key_prefix in s.accepted_key_prefixes:
        raise SettingsError(
            f"accepted_key_prefixes: {s.key_prefix!r} is the current key_prefix; list only "
            "former prefixes"
        )
    if s.retrievable_keys and s.key_encryption_key is None:
        raise SettingsError(
            "GATEWAY_RETRIEVABLE_KEYS: true needs GATEWAY_KEY_ENCRYPTION_KEY or "
            "GATEWAY_KEY_ENCRYPTION_KEY_FILE"
        )
    if s.allow_insecure_redirects and not s.development:
        raise SettingsError(
            "GATEWAY_ALLOW_INSECURE_REDIRECTS: only allowed with GATEWAY_MODE=development"
        )


def with_secret(settings: Settings, *, announce: Callable[[str], None]) -> Settings:
    """Settings with a hashing secret, or a SettingsError.

    In development mode a missing secret is created once under the data folder and kept, so
    keys survive restarts; production refuses to start without an explicit one.
    """
    if settings.secret:
        return settings
    if not settings.development:
        raise SettingsError(
            "GATEWAY_SECRET: not set; production mode needs GATEWAY_SECRET or GATEWAY_SECRET_FILE "
            "(at least 32 bytes, e.g. `openssl rand -hex 32`)"
        )
    path = settings.data_dir / DEV_SECRET_FILE
    if path.exists():
        secret = _secret_bytes(str(path), _read_secret_file(str(path), str(path)))
        return _replace(settings, secret=secret, secret_source=str(path))
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and path.is_file():
            return with_secret(settings, announce=announce)  # another process just made it
        raise SettingsError(
            f"GATEWAY_DATA_DIR: cannot create {str(path)!r} for the development secret "
            f"({exc.strerror or type(exc).__name__})"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    announce(
        f"development mode: created a hashing secret in {path} (keep it; keys made with it "
        "stop working if it changes)"
    )
    secret = _read_secret_file(str(path), str(path))
    return _replace(settings, secret=secret, secret_source=str(path))


def _replace(settings: Settings, **changes: Any) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)

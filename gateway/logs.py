"""Log hygiene: no key, key hash, password hash or secret reaches the logs, at any level.

* aiohttp logs malformed requests (a header over the size limit, a bad request line) at
  ERROR with an excerpt of the offending bytes, which may hold an API key. The filter keeps
  the event and drops the excerpt and the traceback.
* The database and Redis drivers log every statement with its parameters at DEBUG (aiosqlite
  logs the bound values: Argon2id password hashes, key hashes, code hashes). Their loggers are
  held at WARNING, so `log_level: DEBUG` debugs the gateway, never dumps its secrets; their
  warnings and errors still come through. (A level, not a handler filter: it holds for the
  drivers' child loggers and for handlers added later, and costs nothing per statement.)
* The access log shows each request target as sent, and Greenfield takes a whole key in the
  path (`DELETE /api/v1/api-keys/{apikey}`). Anything shaped like a key keeps its public id
  and loses the rest (`apk_<id>***`), as the pages mask keys.
"""

from __future__ import annotations

import json
import logging
import re
import time

from aiohttp.http_exceptions import HttpProcessingError

from gateway.keys.format import BODY_LEN, ID_LEN

_SERVER_LOGGER = "aiohttp.server"
_ACCESS_LOGGER = "aiohttp.access"
_DRIVER_LOGGERS = ("aiosqlite", "asyncpg", "redis")

# `<prefix>_<id><secret><check>` whatever the deployment's prefix. No word boundaries: a key
# glued to other characters (`?k=x<key>y`) is still a key, and masking a look-alike costs
# nothing.
_KEY = re.compile(
    rf"([a-z][a-z0-9]{{1,15}}_[0-9A-Za-z]{{{ID_LEN}}})[0-9A-Za-z]{{{BODY_LEN - ID_LEN}}}"
)


def redact_keys(text: str) -> str:
    """`text` with every key-shaped word cut to its public id and `***`."""
    return _KEY.sub(r"\1***", text)


class _RedactClientBytes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Only aiohttp's parser errors carry client bytes; a bug in a handler keeps its
        # traceback (our own exception messages never hold a key).
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            kind = type(record.exc_info[1]).__name__
            record.msg = "rejected a malformed request (%s); details withheld"
            record.args = (kind,)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class _RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Runs only while the access log is on: one scan of a line that was formatted anyway.
        record.msg = redact_keys(record.getMessage())
        record.args = ()
        # aiohttp also attaches the request line and logged headers for structured formatters.
        line = getattr(record, "first_request_line", None)
        if isinstance(line, str):
            record.first_request_line = redact_keys(line)
        headers = getattr(record, "request_header", None)
        if isinstance(headers, dict):
            record.request_header = {
                name: redact_keys(value) if isinstance(value, str) else value
                for name, value in headers.items()
            }
        return True


_FILTER = _RedactClientBytes()
_ACCESS_FILTER = _RedactKeys()


def install() -> None:
    """Idempotent: attach the filters and quiet the drivers (see the module docstring)."""
    logger = logging.getLogger(_SERVER_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    access = logging.getLogger(_ACCESS_LOGGER)
    if _ACCESS_FILTER not in access.filters:
        access.addFilter(_ACCESS_FILTER)
    for name in _DRIVER_LOGGERS:
        driver = logging.getLogger(name)
        if driver.level < logging.WARNING:  # NOTSET included; a stricter choice is kept
            driver.setLevel(logging.WARNING)


# -- formats (setting `log_format`) ---------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the process's worker number,
    and the structured fields of access lines (`access`) and security events (`event`)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            out["worker"] = self._worker
        for name in ("access", "event"):
            fields = getattr(record, name, None)
            if isinstance(fields, dict):
                out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, fmt: str = "text", *, worker: int | None = None) -> None:
    """Set up the root logger once per process (`log_level`, `log_format`), then `install`."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        where = f"[worker {worker}]" if worker is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{where}: %(message)s")
        )
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a process configured already keeps it
        root.addHandler(handler)
        root.setLevel(level)
    install()


# -- what a reload may change (settings `log_level`, `access_log`) --------------------------


def set_level(level: str) -> None:
    """The process's log level, as `configure` set it at start."""
    logging.getLogger().setLevel(level)


def set_access_log(on: bool) -> None:
    """Turn the access log on or off in this process. The access logger is always handed to
    the servers; whether a line is written follows this (`access_enabled`). Its level is left
    alone: `log_level` still applies to its lines."""
    logging.getLogger(_ACCESS_LOGGER).disabled = not on


def access_enabled(logger: logging.Logger) -> bool:
    """Whether `logger` (the access logger) writes a line now: `disabled`, then the cached
    level check."""
    return logger.isEnabledFor(logging.INFO)

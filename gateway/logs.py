"""Log hygiene: nothing a client sent in its headers reaches the logs.

aiohttp logs malformed requests (a header over the size limit, a bad request line) at
ERROR with an excerpt of the offending bytes, which may hold an API key. The filter keeps
the event and drops the excerpt and the traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

_SERVER_LOGGER = "aiohttp.server"


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


_FILTER = _RedactClientBytes()


def install() -> None:
    """Idempotent: attach the filter to aiohttp's server logger."""
    logger = logging.getLogger(_SERVER_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)

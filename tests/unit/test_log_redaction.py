"""Access-log redaction: a key-shaped word keeps its public id and loses its secret."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from gateway.keys import format as kf
from gateway.logs import install, redact_keys

prefixes = st.from_regex(kf.PREFIX_RE, fullmatch=True)
around = st.text(st.sampled_from(" /?=&\"'-.:aZ9_"), max_size=3)


@given(prefixes, around, around)
def test_a_key_anywhere_in_a_line_is_cut_to_its_id(prefix: str, before: str, after: str) -> None:
    """Whatever the prefix and the punctuation around it, only `<prefix>_<id>***` remains."""
    key = kf.generate(prefix)
    line = f'GET /api/v1/api-keys{before}{key.text}{after} HTTP/1.1" 200'
    out = redact_keys(line)
    assert key.text not in out
    assert key.text[len(key.key_id) :] not in out
    assert f"{key.key_id}***" in out


@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_lines_without_keys_are_unchanged(line: str) -> None:
    """Ordinary text, ids included, passes through as it was."""
    if any(len(word) >= kf.BODY_LEN for word in line.split()):
        return  # a word that long might be key-shaped; the test above covers those
    assert redact_keys(line) == line


def test_key_ids_are_left_alone() -> None:
    """A public key id is what operators search the logs for: it stays."""
    key = kf.generate()
    assert redact_keys(f"/api/v1/api-keys/{key.key_id}") == f"/api/v1/api-keys/{key.key_id}"


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_access_records_are_masked_for_structured_formatters_too() -> None:
    """The access log's message, request line and header extras all lose the key's secret."""
    install()
    key = kf.generate()
    logger = logging.getLogger("aiohttp.access")
    keep = _Keep()
    logger.addHandler(keep)
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False  # an app built earlier in this process may have turned it off
    try:
        logger.info(
            '"%s" %s',
            f"DELETE /api/v1/api-keys/{key.text} HTTP/1.1",
            key.text,
            extra={
                "first_request_line": f"DELETE /api/v1/api-keys/{key.text} HTTP/1.1",
                "request_header": {"Referer": f"https://x/?k={key.text}"},
            },
        )
    finally:
        logger.setLevel(level)
        logger.disabled = disabled
        logger.removeHandler(keep)
    (record,) = keep.records
    shown = [record.getMessage(), record.first_request_line, *record.request_header.values()]
    for text in shown:
        assert key.text not in text
        assert f"{key.key_id}***" in text


def test_driver_loggers_are_quiet_at_debug() -> None:
    """With the root logger at DEBUG, the database and Redis drivers log no DEBUG records."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.DEBUG)
    try:
        install()
        for name in ("aiosqlite", "asyncpg", "asyncpg.pool", "redis", "redis.asyncio.client"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
            assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert logging.getLogger("gateway").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(before)

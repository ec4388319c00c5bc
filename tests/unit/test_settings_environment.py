"""Misspelt GATEWAY_* variables are named, one line each, with the closest real setting."""

from __future__ import annotations

import re

from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.settings import environment_names, unknown_environment

KNOWN = sorted(environment_names())
NAME_TAIL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=30)


@given(st.sets(st.sampled_from(KNOWN)), st.sets(NAME_TAIL))
def test_settings_and_other_variables_are_not_named(known: set[str], tails: set[str]) -> None:
    """Real settings, variables without the prefix, and the test suite's and benchmarks' own
    variables give no line."""
    env = dict.fromkeys(known, "x")
    env.update({f"OTHER_{tail}": "x" for tail in tails})
    env.update({f"GATEWAY_TEST_{tail}": "x" for tail in tails})
    env.update({f"GATEWAY_BENCH_{tail}": "x" for tail in tails})
    assert unknown_environment(env) == []


@given(st.sampled_from(KNOWN), st.data())
def test_a_setting_with_one_letter_dropped_is_named_with_a_suggestion(
    name: str, data: st.DataObject
) -> None:
    """Dropping one character after the prefix gives exactly one line, naming the variable and
    suggesting a real setting."""
    tail = name.removeprefix("GATEWAY_")
    at = data.draw(st.integers(0, len(tail) - 1))
    typo = "GATEWAY_" + tail[:at] + tail[at + 1 :]
    # A drop that makes another real (or exempt) name leaves nothing to warn about.
    assume(typo not in KNOWN and not typo.startswith(("GATEWAY_TEST_", "GATEWAY_BENCH_")))
    (line,) = unknown_environment({typo: "1", name: "1"})
    assert line.startswith(f"{typo} is not a Keygate setting and is ignored; did you mean ")
    suggested = re.search(r"did you mean (GATEWAY_\w+)\?$", line)
    assert suggested is not None
    assert suggested.group(1) in KNOWN


def test_the_suggestion_is_the_closest_setting() -> None:
    """Common slips get the setting that was meant; a name like none gets no suggestion."""
    lines = unknown_environment(
        {"GATEWAY_LISTN": "", "GATEWAY_WORKER": "", "GATEWAY_LOGLEVEL": "", "GATEWAY_XYZZY": ""}
    )
    assert lines == [
        "GATEWAY_LISTN is not a Keygate setting and is ignored; did you mean GATEWAY_LISTEN?",
        "GATEWAY_LOGLEVEL is not a Keygate setting and is ignored; did you mean GATEWAY_LOG_LEVEL?",
        "GATEWAY_WORKER is not a Keygate setting and is ignored; did you mean GATEWAY_WORKERS?",
        "GATEWAY_XYZZY is not a Keygate setting and is ignored",
    ]

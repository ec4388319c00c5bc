"""Named tuples built on the hot path without their Python-level constructor.

A `typing.NamedTuple`'s `__new__` is a generated Python function: each one built costs a
Python call on top of the tuple (about 0.17 µs on the benchmark VM, `RequestHead` with its
eleven fields), and the data plane builds several per request. `maker(Cls)` is the same
constructor at C level: it takes the values as one tuple, in field order. It fills no defaults
and checks no count, so a call site lists every field, defaults included.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

T = TypeVar("T", bound=tuple[Any, ...])


def maker(cls: type[T]) -> Callable[[tuple[Any, ...]], T]:
    """`cls`'s constructor taking every field's value in one tuple (see the module docstring)."""
    return cast(Callable[[tuple[Any, ...]], T], partial(tuple.__new__, cls))

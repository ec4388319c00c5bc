"""Password hashing with Argon2id (from `cryptography`), off the event loop.

Parameters follow RFC 9106's second recommended option (64 MiB, t=3, p=4). Hashes are
stored in PHC string form, so the parameters travel with each hash and can be raised later.
"""

from __future__ import annotations

import asyncio
import os

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

MEMORY_KIB = 64 * 1024
ITERATIONS = 3
LANES = 4
MAX_PASSWORD_BYTES = 1024  # hashing cost is per byte too; refuse absurd inputs early
MIN_PASSWORD_CHARS = 8

# Verifying against this when an account does not exist keeps the response time the same,
# so timing does not reveal which emails have accounts.
_DUMMY_HASH: str | None = None


def _hash_sync(password: str) -> str:
    kdf = Argon2id(
        salt=os.urandom(16), length=32, iterations=ITERATIONS, lanes=LANES, memory_cost=MEMORY_KIB
    )
    return kdf.derive_phc_encoded(password.encode("utf-8"))


def _verify_sync(password: str, encoded: str) -> bool:
    try:
        Argon2id.verify_phc_encoded(password.encode("utf-8"), encoded)
    except (InvalidKey, ValueError):
        return False
    return True


def password_problem(password: str) -> str | None:
    """Why a new password is unacceptable, or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return f"a password may be at most {MAX_PASSWORD_BYTES} bytes"
    return None


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hash_sync, password)


async def verify_password(password: str, encoded: str | None) -> bool:
    """Constant-work check: an absent hash still costs one Argon2id verification."""
    global _DUMMY_HASH
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    if encoded is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = await asyncio.to_thread(_hash_sync, "not-a-password")
        await asyncio.to_thread(_verify_sync, password, _DUMMY_HASH)
        return False
    return await asyncio.to_thread(_verify_sync, password, encoded)

"""API keys: made here, shown once, kept only as SHA-256 digests.

Keys are 192 random bits, so a fast unsalted hash is as safe as a slow one (nobody can guess the
input) and costs ~1 us per request instead of bcrypt's ~100 ms. A presented key is never compared
with a stored secret: it is hashed and its digest looked up, so timing can reveal at most how a
digest's bytes sort, which says nothing about any key. The admin key, a configured secret, is
compared with `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "mf"


def new_key() -> tuple[str, str]:
    """(key id, the key). The id is public (lists, logs); the key is shown once and never stored."""
    key_id = secrets.token_hex(4)
    return key_id, f"{PREFIX}-{key_id}-{secrets.token_urlsafe(24)}"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()  # a header may hold any byte


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def shown(key_id: str) -> str:
    """How a key appears anywhere but at its creation."""
    return f"{PREFIX}-{key_id}-…"


def bearer(header: str | None) -> str | None:
    """The key in `Authorization: Bearer KEY` (also `api-key: KEY`, Azure-style, is not accepted: one way in)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None

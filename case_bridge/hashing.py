"""Password and PIN hashing (hashlib.scrypt, salted, self-describing strings).

Staff passwords use a memory-hard cost. PINs use a lighter cost because every status lookup verifies one (the
status API must answer in a few ms); a 4-digit PIN can't resist an offline search whatever the cost, so what
protects it is the online lockout after repeated failures (`ratelimit`), not the hash.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

PASSWORD_COST = (2**14, 8, 1)   # n, r, p: ~16 MiB, ~50 ms
PIN_COST = (2**8, 8, 1)         # 256 KiB, ~0.3 ms
PIN_DIGITS = 4


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: str, cost: tuple[int, int, int] = PASSWORD_COST) -> str:
    n, r, p = cost
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def hash_pin(pin: str) -> str:
    return hash_secret(pin, PIN_COST)


class VerifiedPins:
    """`verify_secret` for PINs that remembers the (stored hash, PIN) pairs that verified, so a citizen's or a
    kiosk's repeat lookups skip scrypt (0.3-0.6 ms of CPU, the largest single cost of a status lookup).

    Only successes are remembered, so a wrong PIN and an unknown folio still cost one scrypt each (a wrong PIN
    can't be told from an unknown folio by its timing); a correct PIN answering faster reveals nothing its 200
    doesn't. Entries are HMAC tags under a per-process random key, never PINs; a changed PIN is a new stored hash,
    so an old entry can't match it. Never use it for the dummy hash of an unknown folio (that must stay slow)."""

    def __init__(self, size: int = 20_000) -> None:
        self._key = secrets.token_bytes(32)
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, pin: str, stored: str) -> bool:
        tag = hmac.new(self._key, f"{stored}\0{pin}".encode(), hashlib.sha256).digest()
        with self._lock:
            if tag in self._seen:
                self._seen.move_to_end(tag)
                return True
        if not verify_secret(pin, stored):
            return False
        with self._lock:
            self._seen[tag] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return True


VERIFIED_PINS = VerifiedPins()
"""The process's cache of verified PINs (status lookups on the phone line, the portal and the API share it)."""


def new_pin() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(PIN_DIGITS))


def derived_pin(key: bytes, idempotency_key: str) -> str:
    """The PIN of an idempotent open: a retried open returns the same PIN it returned the first time."""
    mac = hmac.new(key, idempotency_key.encode("utf-8"), hashlib.sha256).digest()
    return str(int.from_bytes(mac[:8], "big") % 10**PIN_DIGITS).zfill(PIN_DIGITS)


def phone_hash(number: str) -> str:
    """Hash of a phone number's digits: lets a call record match a citizen without storing the number."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return hashlib.sha256(digits.encode("ascii")).hexdigest()

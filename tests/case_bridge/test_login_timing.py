"""A failed login costs the same for an unknown username as for a known one: both verify a password-cost hash."""
from __future__ import annotations

import time
from pathlib import Path

from case_bridge import hashing, staff
from case_bridge.service import CaseService
from testkit.db import migrated_sqlite


def test_the_unknown_user_dummy_hash_has_the_password_cost() -> None:
    n, r, p = hashing.PASSWORD_COST
    assert staff.DUMMY_PASSWORD_HASH.startswith(f"scrypt${n}${r}${p}$")
    assert not hashing.verify_secret("0000", staff.DUMMY_PASSWORD_HASH)


def test_unknown_and_known_users_fail_in_comparable_time(tmp_path: Path) -> None:
    svc = CaseService.from_url(migrated_sqlite(tmp_path / "cases.db"))
    try:
        svc.create_staff("clerk.one", "correct horse battery", "clerk")

        def best_of(user: str) -> float:
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                assert svc.authenticate(user, "wrong password") is None
                times.append(time.perf_counter() - t0)
            return min(times)
        known, unknown = best_of("clerk.one"), best_of("nobody.here")
        assert unknown > known / 3, (known, unknown)   # before the fix: unknown ~10x faster
    finally:
        svc.close()

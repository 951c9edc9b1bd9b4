"""Staff accounts: clerks, agents, administrators; password check with the same cost for unknown users."""
from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from case_bridge import hashing
from case_bridge.errors import InvalidInput
from case_bridge.models import ROLES, StaffUser, utcnow
from case_bridge.snapshots import staff_view
from case_bridge.unit_of_work import UnitOfWork
from case_bridge.views import StaffView
from foundation.logs import kv

log = logging.getLogger("case_bridge.staff")

# Verified against when a username is unknown, at the password cost, so a failed login takes as long for an unknown
# user as for a known one (a PIN-cost dummy made unknown usernames ~10x faster: usernames could be told apart).
DUMMY_PASSWORD_HASH = hashing.hash_secret(secrets.token_hex(16))


class StaffDirectory:
    """The staff topic of `CaseService`."""

    uow: UnitOfWork

    def create_staff(self, username: str, password: str, role: str, display_name: str = "") -> StaffView:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {ROLES}")
        if not username or len(username) > 64 or not username.replace(".", "").replace("_", "").isalnum():
            raise InvalidInput("usuario: letras, números, punto o guion bajo (máx. 64)")
        if len(password) < 8:
            raise InvalidInput("la contraseña debe tener al menos 8 caracteres")

        def work(s: Session) -> StaffView:
            if s.execute(select(StaffUser.id).where(StaffUser.username == username)).first():
                raise InvalidInput(f"el usuario {username} ya existe")
            user = StaffUser(username=username, password_hash=hashing.hash_secret(password), role=role,
                             display_name=display_name or username)
            s.add(user)
            s.flush()
            return staff_view(user)

        return self.uow.write(work)

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise InvalidInput("la contraseña debe tener al menos 8 caracteres")

        def work(s: Session) -> None:
            user = s.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
            if user is None:
                raise InvalidInput(f"usuario desconocido: {username}")
            user.password_hash = hashing.hash_secret(password)   # a new stamp: earlier sessions end (views.py)
            log.info(kv(event="staff_password_set", user=username))

        self.uow.write(work)

    def set_active(self, username: str, active: bool) -> None:
        """Deactivate (or reactivate) an account. Every web process re-reads the account on each request, so a
        deactivated user's sessions end at their next request, wherever they were signed in."""

        def work(s: Session) -> None:
            user = s.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
            if user is None:
                raise InvalidInput(f"usuario desconocido: {username}")
            user.active = active
            log.info(kv(event="staff_active_set", user=username, active=active))

        self.uow.write(work)

    def authenticate(self, username: str, password: str) -> StaffView | None:
        with self.uow.session() as s, s.begin():
            user = s.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
            ok = hashing.verify_secret(password, user.password_hash if user else DUMMY_PASSWORD_HASH)
            if user is None or not ok or not user.active:
                log.info(kv(event="staff_login_failed"))
                return None
            user.last_login_at = utcnow()
            return staff_view(user)

    def get_staff(self, staff_id: int) -> StaffView | None:
        with self.uow.session() as s:
            user = s.get(StaffUser, staff_id)
            return staff_view(user) if user and user.active else None

    def active_staff(self, username: str) -> StaffView | None:
        """The account by username if it exists and is active (an agent's call back checks its agent)."""
        with self.uow.session() as s:
            user = s.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
            return staff_view(user) if user and user.active else None

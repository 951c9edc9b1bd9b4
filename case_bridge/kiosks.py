"""Enrolled kiosks: the devices allowed to serve /kiosco. An admin enrols one and gets its device token once;
only the token's SHA-256 is stored (the token is 32 random bytes, so a fast hash suffices: nothing to brute-force),
and a revoked kiosk is refused at its next request."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from case_bridge.errors import InvalidInput
from case_bridge.models import Base, utcnow
from case_bridge.unit_of_work import UnitOfWork

TOKEN_BYTES = 32


class KioskDevice(Base):
    __tablename__ = "kiosk_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    enrolled_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


@dataclass(frozen=True, slots=True)
class KioskView:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def actor(self) -> str:
        """How the kiosk is named in the interactions it records."""
        return f"kiosk:{self.id}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _view(row: KioskDevice) -> KioskView:
    return KioskView(row.id, row.name, row.created_at, row.revoked_at)


class Kiosks:
    """The kiosk topic of `CaseService`."""

    uow: UnitOfWork

    def enrol_kiosk(self, name: str, *, actor: str = "") -> tuple[KioskView, str]:
        """A new kiosk and its device token (in clear only here: show it once)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput("nombre del quiosco: de 1 a 100 caracteres")
        token = secrets.token_urlsafe(TOKEN_BYTES)

        def work(s: Session) -> KioskView:
            row = KioskDevice(name=name, token_hash=token_hash(token), enrolled_by=actor[:64])
            s.add(row)
            s.flush()
            return _view(row)

        return self.uow.write(work), token

    def revoke_kiosk(self, kiosk_id: int) -> None:
        def work(s: Session) -> None:
            row = s.get(KioskDevice, kiosk_id)
            if row is None:
                raise InvalidInput(f"quiosco desconocido: {kiosk_id}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()

        self.uow.write(work)

    def kiosk_for_token(self, token: str) -> KioskView | None:
        """The enrolled, not revoked kiosk holding `token`, else None."""
        if not token or len(token) > 200:
            return None
        with self.uow.session() as s:
            row = s.execute(select(KioskDevice).where(KioskDevice.token_hash == token_hash(token))).scalar_one_or_none()
            return _view(row) if row is not None and row.revoked_at is None else None

    def list_kiosks(self) -> list[KioskView]:
        with self.uow.session() as s:
            return [_view(r) for r in s.execute(select(KioskDevice).order_by(KioskDevice.id)).scalars()]

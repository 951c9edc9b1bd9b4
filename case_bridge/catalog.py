"""The trámites the case record knows (loaded from the dialogue's catalog by `dialogs.catalog_seed`)."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from case_bridge.models import Tramite
from case_bridge.snapshots import tramite_info
from case_bridge.unit_of_work import UnitOfWork
from case_bridge.views import TramiteInfo


class TramiteCatalog:
    """The catalog topic of `CaseService`."""

    uow: UnitOfWork

    def upsert_tramites(self, entries: Sequence[TramiteInfo]) -> int:
        def work(s: Session) -> int:
            for e in entries:
                row = s.get(Tramite, e.id) or Tramite(id=e.id)
                row.name, row.agency = e.name, e.agency
                row.start_channels, row.finish_channels = list(e.start_channels), list(e.finish_channels)
                row.requirements, row.offices = list(e.requirements), list(e.offices)
                s.add(row)
            return len(entries)

        return self.uow.write(work)

    def list_tramites(self) -> list[TramiteInfo]:
        with self.uow.session() as s:
            return [tramite_info(t) for t in s.execute(select(Tramite).order_by(Tramite.name)).scalars()]

    def get_tramite(self, tramite_id: str) -> TramiteInfo | None:
        with self.uow.session() as s:
            row = s.get(Tramite, tramite_id)
            return tramite_info(row) if row else None

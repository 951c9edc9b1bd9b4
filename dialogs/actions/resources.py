"""What the actions share in one process: the two catalogs and the case-bridge service.

Built once, on first use (or at action-server start, so the first caller waits for nothing). Tests and the
benchmark pass their own `Resources` to each action's constructor instead.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dialogs.catalog import CityCatalog, TramiteCatalog, load_catalogs
from foundation.logs import kv

if TYPE_CHECKING:
    from case_bridge.service import CaseService

log = logging.getLogger("dialogs.actions")

@dataclass
class Resources:
    cities: CityCatalog
    tramites: TramiteCatalog
    cases: CaseService | None   # None: status and case opening answer "not available now"
    # outbound.allowed_prefixes when the node places callbacks (outbound.enabled); empty: the dialogue never
    # offers "¿Quiere que le llamemos cuando cambie el estado?"
    callback_prefixes: tuple[str, ...] = ()


def load_resources(with_cases: bool = True) -> Resources:
    """Catalogs from nlu_data/ (or $VERATUR_CITIES_CATALOG / $VERATUR_TRAMITES_CATALOG) and the case service
    from the node configuration; a broken database is logged and leaves `cases` None instead of failing."""
    cities, tramites = load_catalogs()
    cases = None
    prefixes: tuple[str, ...] = ()
    if with_cases:
        try:
            from case_bridge.service import CaseService
            from dialogs.catalog_seed import seed_catalog
            from foundation.config import load_settings

            settings = load_settings()
            cases = CaseService.from_settings(settings)
            if settings.outbound.enabled:
                prefixes = tuple(settings.outbound.allowed_prefixes)
            count, source = seed_catalog(cases)
            log.info(kv(event="catalog_seeded", tramites=count, source=source))
        except Exception as exc:  # the dialogue still answers catalog questions without the record
            log.error(kv(event="case_service_unavailable", error=f"{type(exc).__name__}: {exc}"[:300]))
            cases = None
    log.info(kv(event="resources_loaded", cities=len(cities), tramites=len(tramites), cases=cases is not None))
    return Resources(cities, tramites, cases, prefixes)


@functools.cache
def default_resources() -> Resources:
    """The process-wide resources of the action server (built once)."""
    return load_resources()


class UsesResources:
    """Mixin: `self.res` is the injected Resources or the process default."""

    def __init__(self, resources: Resources | None = None) -> None:
        self._resources = resources

    @property
    def res(self) -> Resources:
        if self._resources is None:
            self._resources = default_resources()
        return self._resources

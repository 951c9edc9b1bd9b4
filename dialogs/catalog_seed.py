"""Seed data: the trámite catalog mirrored into the Tramite table, and a demo case for `make run`.

The catalog's source of truth is `nlu_data/tramites.yml` (loaded and validated by `dialogs.catalog`). Until that file
exists the two `FALLBACK_TRAMITES` below keep the portal usable in development; `seed_catalog` says which it used.
"""
from __future__ import annotations

import logging

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo, TramiteInfo
from foundation.logs import kv

log = logging.getLogger("dialogs.catalog_seed")

FALLBACK_TRAMITES = (
    TramiteInfo("licencia_conducir", "Licencia de conducir", "Secretaría de Seguridad Pública",
                start_channels=("phone", "web", "office", "kiosk", "call_center"), finish_channels=("office",),
                requirements=("Identificación oficial", "Comprobante de domicilio", "CURP"),
                offices=("Delegación de Tránsito Xalapa", "Delegación de Tránsito Veracruz")),
    TramiteInfo("acta_nacimiento", "Copia certificada de acta de nacimiento", "Registro Civil",
                start_channels=("phone", "web", "office", "kiosk", "call_center"),
                finish_channels=("web", "office", "kiosk"), requirements=("CURP",),
                offices=("Registro Civil Xalapa",)),
)
DEMO_KEY = "demo:case:1"


def catalog_tramites() -> tuple[list[TramiteInfo], str]:
    """The trámites of nlu_data/tramites.yml as TramiteInfo, or the fallback pair with the reason why."""
    try:
        from dialogs.catalog import load_tramites
        catalog = load_tramites()
    except Exception as exc:  # the catalog is a person-written file: any failure falls back, loudly
        log.warning(kv(event="catalog_unavailable", error=f"{type(exc).__name__}: {exc}"[:300]))
        return list(FALLBACK_TRAMITES), f"built-in fallback ({type(exc).__name__})"
    items = []
    for t in catalog.tramites:
        agency = catalog.agency_of(t)
        items.append(TramiteInfo(t.id, t.name, agency.name, tuple(t.channels_start), tuple(t.channels_finish),
                                 tuple(t.requirements), (t.where,)))
    return items, str(catalog.source)


def seed_catalog(svc: CaseService) -> tuple[int, str]:
    items, source = catalog_tramites()
    return svc.upsert_tramites(items), source


def seed_demo(svc: CaseService) -> tuple[str, str]:
    """A demo citizen with a case opened by phone, so the portal shows something (idempotent)."""
    tramites = {t.id: t for t in svc.list_tramites()}
    phone_ok = [t for t in tramites.values() if "phone" in t.start_channels or not t.start_channels]
    tramite = tramites.get("licencia-automovilista") or tramites.get("licencia_conducir") or phone_ok[0]
    call_id = "demo-call-1@veratur"
    svc.link_call(call_id, "2281234567", called="veratur", node="demo")
    svc.add_turn(call_id, "caller", f"quiero saber los requisitos de {tramite.name.lower()}",
                 intent="consultar_requisitos", confidence=0.93, idempotency_key=f"{call_id}#1")
    opened = svc.open_case(tramite.id, "phone", idempotency_key=DEMO_KEY, call_id=call_id,
                           citizen=CitizenInfo("Ana Demo Pérez", curp="PEPA900101MVZRRN09", phone="2281234567"),
                           summary=f"solicitó requisitos de {tramite.name.lower()}")
    svc.close_call(call_id, "completed")
    return opened.case.folio, opened.pin

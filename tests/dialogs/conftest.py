"""Fixtures of the dialogue tests: the real catalogs, a real case service on a migrated SQLite database,
hand-built rasa-sdk trackers, and (session-scoped) the cached trained model with a real `rasa run` + action
server started on free ports."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker

from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from dialogs.actions.resources import Resources, load_resources
from dialogs.catalog_seed import seed_catalog
from testkit.db import REDIS_URL
from veratur.rasa_server import RasaStack
from veratur.training import ensure_model


@pytest.fixture(scope="session")
def catalogs() -> Resources:
    return load_resources(with_cases=False)


@pytest.fixture(scope="session")
def cases_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dialogs') / 'cases.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def case_service(cases_db: str) -> Iterator[CaseService]:
    svc = CaseService.from_url(cases_db, redis_url=REDIS_URL, ratelimit_prefix=f"dlg-{uuid.uuid4().hex[:8]}")
    seed_catalog(svc)
    yield svc
    svc.close()


@pytest.fixture
def resources(catalogs: Resources, case_service: CaseService) -> Resources:
    return Resources(catalogs.cities, catalogs.tramites, case_service)


def caller_number() -> str:
    """A fresh caller number: the case bridge also counts failures per caller."""
    return "228" + str(uuid.uuid4().int)[:7]


def tracker(text: str, intent: str, *, entities: list[dict[str, Any]] | None = None,
            slots: dict[str, Any] | None = None, previous_bot: list[dict[str, Any]] | None = None,
            active_loop: str | None = None, confidence: float = 1.0,
            metadata: dict[str, Any] | None = None) -> Tracker:
    """A rasa-sdk tracker whose latest user turn is `text`; `previous_bot` = the bot messages before it
    ({"text": ..., "custom": {...}})."""
    latest = {"text": text, "intent": {"name": intent, "confidence": confidence},
              "entities": entities or [], "metadata": metadata or {}}
    events: list[dict[str, Any]] = [{"event": "user", "text": "hola", "parse_data": {"intent": {"name": "greet"}}}]
    for message in previous_bot or []:
        events.append({"event": "bot", "text": message.get("text"), "data": {"custom": message.get("custom")}})
    events.append({"event": "user", "text": text, "parse_data": latest})
    return Tracker("test-conversation", dict(slots or {}), latest, events, False, None,
                   {"name": active_loop} if active_loop else {}, "action_listen")


def entity(name: str, value: str) -> dict[str, Any]:
    return {"entity": name, "value": value}


@pytest.fixture(scope="session")
def rasa_model() -> Path:
    """The model for the current YAML: trained once per content hash, shared by every test run."""
    return ensure_model()


@pytest.fixture(scope="session")
def rasa_stack(rasa_model: Path, cases_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RasaStack]:
    """A real `rasa run --enable-api` and action server on free ports, using the test case database and, as in
    production (`veratur rasa`), the Redis tracker store."""
    env = dict(os.environ, VERATUR__DATABASE__URL=cases_db, VERATUR__REDIS__URL=REDIS_URL)
    stack = RasaStack(rasa_model, log_dir=tmp_path_factory.mktemp("rasa-logs"), env=env, redis_url=REDIS_URL)
    stack.start()
    yield stack
    stack.stop()

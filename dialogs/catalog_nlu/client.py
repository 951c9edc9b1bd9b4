"""The HTTP side of the catalog entity extractor (stdlib + PyYAML only, so the engine's tests import it too)."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
ENV_URL = "VERATUR_ACTIONS_URL"
ROUTE = "/catalog/entities"


def actions_url(argv: list[str] | None = None) -> str | None:
    """The action server's base URL: $VERATUR_ACTIONS_URL, or the endpoints file's action_endpoint."""
    if os.environ.get(ENV_URL, "").strip():
        return os.environ[ENV_URL].strip().rstrip("/")
    args = sys.argv if argv is None else argv
    path = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--endpoints"), None)
    if path is None:
        return None
    try:
        endpoints = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        url = str((endpoints.get("action_endpoint") or {}).get("url") or "")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return url.removesuffix("/webhook").rstrip("/") or None


class CatalogClient:
    """POST the turn; the entities back, or None on any failure (logged once per outage, not once per turn)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url + ROUTE
        self.timeout_s = timeout_s
        self._down = False

    def entities(self, text: str, intent: str | None, entities: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        body = json.dumps({"text": text, "intent": intent, "entities": entities}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310 - local URL
                answer = json.loads(resp.read())["entities"]
            if not isinstance(answer, list) or not all(isinstance(e, dict) for e in answer):
                raise ValueError("entities is not a list of objects")
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
            if not self._down:
                self._down = True
                log.warning("event=catalog_entities_unavailable url=%s error=%s ms=%.0f: DIET's entities stand",
                            self.url, type(exc).__name__, (time.perf_counter() - started) * 1000)
            return None
        if self._down:
            self._down = False
            log.info("event=catalog_entities_available url=%s", self.url)
        return answer

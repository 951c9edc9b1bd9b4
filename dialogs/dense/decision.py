"""When the dense intent service is asked, and when its answer replaces DIET's (stdlib only: Rasa's 3.10 venv, the
engine's 3.11 and the tests all import it).

The rule: only a turn DIET is unsure of (its top intent below `diet` confidence, or the FallbackClassifier's
nlu_fallback) is sent; the dense top intent is taken when its vote share is at least `dense`. Any failure of the
service (refused, slow past the timeout, a bad answer) keeps DIET's answer: the dialogue works as before without it.
Thresholds are chosen on nlu_data/test (bench/nlu_dense_thresholds.py), never on the independent set.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("veratur.dense")

FALLBACK_INTENT = "nlu_fallback"
ENV_URL = "VERATUR_DENSE_URL"
"""Where Rasa finds the service (set by `veratur rasa` and RasaStack from config dialogue.dense); unset: off."""
Post = Callable[[str, bytes, float], bytes]
"""(url, JSON body, timeout seconds) -> response body; raises on any failure. The HTTP seam of the tests."""


@dataclass(frozen=True)
class Thresholds:
    diet: float = 0.85      # chosen on nlu_data/test by bench/nlu_dense_thresholds.py (docs/nlu-dense.md)
    dense: float = 0.4


@dataclass(frozen=True)
class Decision:
    intent: str
    score: float
    diet_intent: str
    diet_confidence: float


def diet_top(intent: dict[str, Any] | None, ranking: list[dict[str, Any]] | None) -> tuple[str, float, bool]:
    """DIET's own top intent and confidence, and whether the FallbackClassifier replaced it (its nlu_fallback
    heads the ranking then, DIET's top is the next entry)."""
    name = str((intent or {}).get("name") or "")
    fell_back = name == FALLBACK_INTENT
    for entry in ranking or []:
        if entry.get("name") != FALLBACK_INTENT:
            return str(entry.get("name") or ""), float(entry.get("confidence") or 0.0), fell_back
    return name, float((intent or {}).get("confidence") or 0.0), fell_back


def should_ask(text: str, diet_confidence: float, fell_back: bool, thresholds: Thresholds) -> bool:
    if not text or text.startswith("/") or not any(ch.isalpha() for ch in text):
        return False        # a payload (/greet, a button) or keypad digits: DIET and the forms handle those
    return fell_back or diet_confidence < thresholds.diet


def choose(dense: list[dict[str, Any]], thresholds: Thresholds) -> tuple[str, float] | None:
    if not dense:
        return None
    top = dense[0]
    name, score = top.get("name"), top.get("score")
    if not isinstance(name, str) or not isinstance(score, int | float) or score < thresholds.dense:
        return None
    return name, float(score)


def _urllib_post(url: str, body: bytes, timeout_s: float) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - local URL from config
        data: bytes = response.read()
        return data


class DenseClient:
    """POST /classify with a bounded timeout; None on any failure, logged once per outage (not once per turn)."""

    def __init__(self, url: str, timeout_s: float = 0.15, post: Post | None = None, method: str = "linear") -> None:
        self.url = url.rstrip("/") + "/classify"
        self.timeout_s = timeout_s
        self.method = method
        self._post = post or _urllib_post
        self._down = False
        self.last_ms = 0.0

    def classify(self, text: str) -> list[dict[str, Any]] | None:
        started = time.perf_counter()
        try:
            raw = self._post(self.url, json.dumps({"text": text, "method": self.method}).encode(), self.timeout_s)
            intents = json.loads(raw)["intents"]
            if not isinstance(intents, list):
                raise ValueError("intents is not a list")
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
            self.last_ms = (time.perf_counter() - started) * 1000
            if not self._down:
                self._down = True
                log.warning("event=dense_unavailable url=%s error=%s: DIET's intents stand until it answers",
                            self.url, type(exc).__name__)
            return None
        self.last_ms = (time.perf_counter() - started) * 1000
        if self._down:
            self._down = False
            log.info("event=dense_available url=%s", self.url)
        return intents


def decide(text: str, intent: dict[str, Any] | None, ranking: list[dict[str, Any]] | None,
           client: DenseClient | None, thresholds: Thresholds) -> Decision | None:
    """The dense intent to use instead of DIET's for this turn, or None to keep DIET's."""
    if client is None:
        return None
    diet_name, diet_confidence, fell_back = diet_top(intent, ranking)
    if not should_ask(text, diet_confidence, fell_back, thresholds):
        return None
    dense = client.classify(text)
    picked = choose(dense or [], thresholds)
    if picked is None:
        return None
    return Decision(picked[0], picked[1], diet_name, diet_confidence)

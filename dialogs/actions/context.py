"""What actions read from the tracker: the engine's call metadata, the last bot question, entities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rasa_sdk import Tracker


@dataclass(frozen=True, slots=True)
class CallMeta:
    """Sent by the engine with every turn (ivr/dialogue/rasa.py); empty for text chats."""
    call_id: str | None
    caller_number: str | None
    case_folio: str | None
    channel: str


def call_meta(tracker: Tracker) -> CallMeta:
    meta: dict[str, Any] = dict(tracker.get_slot("session_started_metadata") or {})
    meta.update((tracker.latest_message or {}).get("metadata") or {})
    return CallMeta(call_id=_str(meta.get("call_id")), caller_number=_str(meta.get("caller_number")),
                    case_folio=_str(meta.get("case_folio")), channel=str(meta.get("channel") or "phone"))


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def latest_text(tracker: Tracker) -> str:
    return str((tracker.latest_message or {}).get("text") or "")


def latest_intent(tracker: Tracker) -> str:
    return str(((tracker.latest_message or {}).get("intent") or {}).get("name") or "")


def intent_confidence(tracker: Tracker) -> float:
    return float(((tracker.latest_message or {}).get("intent") or {}).get("confidence") or 0.0)


def entity_values(tracker: Tracker, entity: str) -> list[str]:
    """Values of `entity` in the latest message, in order, without repeats (several extractors may agree)."""
    out: list[str] = []
    for ent in (tracker.latest_message or {}).get("entities") or []:
        if ent.get("entity") == entity and ent.get("value") is not None:
            value = str(ent["value"])
            if value not in out:
                out.append(value)
    return out


def previous_bot_turn(tracker: Tracker) -> list[dict[str, Any]]:
    """The bot messages (text + custom data) sent after the caller's previous turn — what the latest
    user message answers or asks to repeat."""
    events = list(tracker.events)
    users = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if not users:
        return []
    end = users[-1]
    start = users[-2] if len(users) > 1 else -1
    out = []
    for e in events[start + 1:end]:
        if e.get("event") == "bot" and (e.get("text") or (e.get("data") or {}).get("custom")):
            out.append({"text": e.get("text"), "custom": (e.get("data") or {}).get("custom")})
    return out


def last_custom(tracker: Tracker) -> dict[str, Any] | None:
    """The payload carrying a `question` marker in the bot turn before the latest user turn, if any."""
    for message in reversed(previous_bot_turn(tracker)):
        custom = message.get("custom") or {}
        if custom.get("question"):
            return dict(custom)
    return None


def last_question(tracker: Tracker) -> str | None:
    """The `question` marker of the last bot message before the latest user turn, if any."""
    custom = last_custom(tracker)
    return str(custom["question"]) if custom else None

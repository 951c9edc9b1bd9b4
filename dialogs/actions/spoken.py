"""Answers sized for the ear: one reply is at most ~20 s of espeak-ng speech (about 42 words at rate 165).

A caller cannot scroll back. Long lists are cut to their first items and the rest is kept in the `more_text`
slot behind the question "¿Quiere que le diga los demás?" (`question: more`); a bare "sí" reads it.
bench/reply_lengths.py measures the real spoken durations of every catalog answer.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.payloads import expect, say
from dialogs.catalog import spoken_list

MAX_WORDS = 42
"""espeak-ng roa/es-419 at rate 165 says ~2.2 words a second (bench/reply_lengths.py): 42 words is ~19 s."""
LIST_HEAD = 3
"""Items read before offering the rest: a caller keeps about three in mind."""
MORE_QUESTION = "¿Quiere que le diga los demás?"
MORE_PROMPT = "¿Quiere que le siga?"
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def word_count(text: str) -> int:
    return len(text.split())


def short_item(text: str) -> str:
    """The head of a catalog list item, for a spoken list: 'Identificación oficial vigente con fotografía,
    como la credencial...' -> 'Identificación oficial vigente con fotografía'. Details stay for a follow-up."""
    head = text.strip().rstrip(".").split(",")[0]
    head = re.split(r"\s\((?:[^)]*)\)|;|:", head)[0]
    return head.strip() or text.strip().rstrip(".")


def lower_first(text: str) -> str:
    """'Acta de nacimiento' -> 'acta de nacimiento' inside a sentence; 'CURP' stays."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def head_and_rest(entries: Sequence[str], n: int = LIST_HEAD) -> tuple[list[str], list[str]]:
    items = [lower_first(short_item(e)) for e in entries if e.strip()]
    return items[:n], items[n:]


LIST_WORDS = 22
"""Words of list items read in one go (the lead and the offer of the rest come on top)."""


def list_sentence(lead: str, entries: Sequence[str], n: int = LIST_HEAD) -> tuple[str, str | None]:
    """('lead: a, b y c.', the rest as a sentence or None). The rest is what a 'sí, los demás' reads. Long
    items mean fewer of them: at least one, at most `n`, within LIST_WORDS."""
    items = [lower_first(short_item(e)) for e in entries if e.strip()]
    fit = 1
    while fit < min(n, len(items)) and word_count(" ".join(items[:fit + 1])) <= LIST_WORDS:
        fit += 1
    head, rest = items[:fit], items[fit:]
    if not rest:
        return f"{lead}: {spoken_list(head)}.", None
    return (f"{lead}, entre otros: {spoken_list(head)}.",
            f"Además: {spoken_list(rest)}.")


def split_to_fit(text: str, budget: int = MAX_WORDS) -> tuple[str, str | None]:
    """(what fits in `budget` words, cut at a sentence end; the remainder or None). The first sentence is
    always said, even when alone it is longer."""
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    head: list[str] = []
    used = 0
    for i, sentence in enumerate(sentences):
        n = word_count(sentence)
        if head and used + n > budget:
            return " ".join(head), " ".join(sentences[i:])
        head.append(sentence)
        used += n
    return " ".join(head), None


def say_sized(dispatcher: CollectingDispatcher, body: str, tail: str, *, more: str | None = None,
              hint: dict[str, Any] | None = None, question: str | None = None) -> list[EventType]:
    """Say `body` + `tail` within MAX_WORDS; what does not fit (and `more`, the rest of a list) is kept for a
    'sí' and the tail becomes the offer to go on. Returns the slot events to add."""
    head, overflow = split_to_fit(body, MAX_WORDS - word_count(tail))
    rest = " ".join(p for p in (overflow, more) if p) or None
    if rest is None:
        say(dispatcher, f"{head} {tail}".strip(), hint=hint, question=question)
        return []   # a stale more_text is harmless: only a `more` question reads it, and that sets it anew
    offer = MORE_QUESTION if more and not overflow else MORE_PROMPT
    say(dispatcher, f"{head} {offer}", hint=expect("yes_no"), question="more")
    return [SlotSet("more_text", rest)]


def say_more(dispatcher: CollectingDispatcher, rest: str, tail: str) -> list[EventType]:
    """Read the kept remainder (again sized; a very long one goes on behind another offer)."""
    head, overflow = split_to_fit(rest, MAX_WORDS - word_count(tail))
    if overflow:
        say(dispatcher, f"{head} {MORE_PROMPT}", hint=expect("yes_no"), question="more")
        return [SlotSet("more_text", overflow)]
    say(dispatcher, f"{head} {tail}", question="anything_else" if tail.startswith("¿Le ayudo") else None)
    return [SlotSet("more_text", None)]

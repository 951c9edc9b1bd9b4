"""What a call does when the recognizer is overloaded and an utterance's final would come late.

The session (ivr.call.session) asks `late_final()` while it waits for a final: from the wait the decoding backlog
predicted at the end of speech (ivr.speech.backlog) and the time already waited, it says nothing, "hold" (past
`asr.max_wait_ms`: the caller hears "Un momento, por favor." once) or "keypad" (past `asr.max_wait_keypad_ms`: the
utterance's decode is dropped and the caller is asked for the prompt's answer on the keypad, `keypad_question()`).

The keys a prompt takes are the ones it names itself ("o marque uno para turismo, dos para trámites ..."; the
dialogue's prompts say them, dialogs/actions/control.py decides what they mean): those sentences are said again
from their "marque". A prompt that names none gets the keys of its expected answer: 1 sí / 2 no (the convention
of every yes/no question the dialogue asks), digits ended by the terminator, else the session's key menu.
"""
from __future__ import annotations

import re
from typing import Literal

from ivr.speech.expect import Expect
from ivr.speech.tts import split_sentences

LateAction = Literal["hold", "keypad"]

_KEYS_FROM = re.compile(r"\b(m[aá]rque(?:lo|la|los)?|oprima|presione|use el teclado)\b", re.IGNORECASE)
_TERMINATORS = {"#": "la tecla gato", "*": "la tecla asterisco"}


def late_final(*, waited_s: float, estimate_s: float, hold_ms: int, keypad_ms: int) -> LateAction | None:
    """What to do for a final expected `estimate_s` after the end of speech and already waited `waited_s`.
    A bound of 0 is off."""
    expected_ms = 1000.0 * max(waited_s, estimate_s)
    if keypad_ms and expected_ms > keypad_ms:
        return "keypad"
    if hold_ms and expected_ms > hold_ms:
        return "hold"
    return None


def key_sentences(question: str) -> list[str]:
    """The sentences of `question` that say which keys to press, each from its "marque" on."""
    out = []
    for sentence in split_sentences(question):
        m = _KEYS_FROM.search(sentence)
        if m is None:
            continue
        keys = sentence[m.start():].strip()
        out.append(keys[:1].upper() + keys[1:])
    return out


def keypad_question(expect: Expect, question: str, *, lead: str, key_menu: str) -> tuple[str, ...]:
    """What the caller hears when the speech answer to `question` cannot be decoded in time: `lead`, then how
    to answer `question` with keys."""
    named = key_sentences(question)
    if named:
        return (lead, *named)
    if expect.kind == "yes_no":
        return (lead, "Marque 1 para sí o 2 para no.")
    if expect.kind == "digits":
        if expect.max_digits > 1:
            end = _TERMINATORS.get(expect.terminator)
            return (lead, f"Marque los dígitos en el teclado{f' y termine con {end}' if end else ''}.")
        return (lead, "Marque en el teclado el número de su respuesta.")
    return (lead, key_menu)

"""What a call does when the recognizer is overloaded and an utterance's final would come late.

The session (ivr.call.session) asks `late_final()` while it waits for a final: from the wait the decoding backlog
predicted at the end of speech (ivr.speech.backlog) and the time already waited, it says nothing, "hold" (past
`asr.max_wait_ms`: the caller hears "Un momento, por favor." once) or "keypad" (past `asr.max_wait_keypad_ms`: the
utterance's decode is dropped and the caller is asked for the prompt's answer on the keypad, `keypad_question()`).

The keys a prompt takes are the ones it names itself ("o marque uno para turismo, dos para trámites ...", "También
puede marcar uno para ..., dos para ..." of a trámite disambiguation; the dialogue's prompts say them,
dialogs/actions/control.py decides what they mean): those sentences are said again from their "marque". A prompt
that names none gets the keys its kind of answer takes (ivr.speech.expect; the keys are those action_dtmf_menu
gives a meaning to at that point):
    yes_no   1 sí / 2 no (the convention of every yes/no question the dialogue asks)
    digits   the digits, ended by the terminator (one key for a one-digit answer)
    menu     the main key menu (a menu prompt that names no keys is the main menu said in words)
    city     9 says the question again (to say the city once the recognizer has caught up), 0 an agent. No numbered
             city list: neither the keypad-only menu (dialogs/menu.yml) nor the dialogue has one, and a key at the
             city question means the main menu's option to action_dtmf_menu, so "marque 3 para Papantla" would open
             the status form instead.
    free     the main key menu, said as such, with 0 for an agent (an open question has no keys of its own)
"""
from __future__ import annotations

import re
from typing import Literal

from ivr.speech.expect import Expect
from ivr.speech.tts import split_sentences

LateAction = Literal["hold", "keypad"]

_KEYS_FROM = re.compile(r"\b(?:(?:tambi[eé]n )?puede (marcar)|m[aá]rque(?:lo|la|los)?|oprima|presione|use el teclado)\b",
                        re.IGNORECASE)
CITY_KEYS = "Marque 9 para que le repita la pregunta y me diga la ciudad de nuevo, o marque 0 para hablar con un agente."
MAIN_KEYS = ("marque 1 para turismo, 2 para información de trámites, 3 para el estado de su trámite, o 0 para hablar "
             "con un agente.")
"""The main menu's keys as the engine says them (its key-menu phrase, SessionPhrases.dtmf_menu, ends with them too)."""
FREE_KEYS = "Para seguir con el teclado, estas son las opciones del menú principal: " + MAIN_KEYS
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
        if m.group(1):                               # "También puede marcar uno para ..." -> "Marque uno para ..."
            keys = "marque" + keys[m.end() - m.start():]
        out.append(keys[:1].upper() + keys[1:])
    return out


def keypad_question(expect: Expect, question: str, *, lead: str, key_menu: str, city_keys: str = CITY_KEYS,
                    free_keys: str = FREE_KEYS) -> tuple[str, ...]:
    """What the caller hears when the speech answer to `question` cannot be decoded in time: `lead`, then how
    to answer `question` with keys (see the module docstring for each kind)."""
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
    if expect.kind == "menu":
        return (lead, key_menu)
    if expect.kind == "city":
        return (lead, city_keys)
    return (lead, free_keys)

"""What the next caller answer is expected to be. The dialogue says it; speech uses it to pick the recognizer
grammar and the endpointing silence, the call to collect keys."""
from __future__ import annotations

from dataclasses import dataclass

from foundation.vocabulary import ExpectKind


@dataclass(frozen=True, slots=True)
class Expect:
    """What the next caller answer is expected to be: drives ASR grammar, endpointing and DTMF collection."""
    kind: ExpectKind = "free"
    phrases: tuple[str, ...] = ()      # closed set for a Vosk grammar (menu words, city names)
    max_digits: int = 1
    terminator: str = "#"
    secret: bool = False               # a PIN or CURP fragment: the transcript keeps it masked

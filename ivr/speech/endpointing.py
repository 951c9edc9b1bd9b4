"""Endpointing: when has the caller finished answering?

The trailing-silence threshold adapts to what the prompt expects (`ivr.speech.expect.Expect.kind`): a closed answer
(yes/no, a menu word, a city, digits) ends after `turns.endpoint_silence_ms_closed`, free speech after
`turns.endpoint_silence_ms_free`; a spoken digit string that already has `max_digits` digits ends at once.
With `silence_ms_digits` (a recognizer that can read the digits heard so far, `wants_peek`), an incomplete digit
string waits longer: callers read a folio in groups ("1765 ... 4354") and pause 0.5-1 s between them. The wait
is keyed to the expected length (`expected_digits`: a digits prompt's `max_digits`, the folio's 8 or the PIN's
4) and to what the reading at the closed silence heard (`on_peek`): only a digit string shorter than expected
waits (an empty reading counts as short: the guards refuse readings like "dos cero cero cero"); a complete one
ends at once; words, a menu or a one-key answer end at the closed silence. A menu answer ("tres") therefore never waits for a "next group" and cannot run into the next turn.
Silence is counted from the later of the last voiced frame and the last change of the Vosk partial, so a
decoder still producing words keeps the turn open. Pure: the caller passes the time.
"""
from __future__ import annotations

from dataclasses import dataclass

from ivr.speech.expect import Expect

MAX_UTTERANCE_S = 20.0           # a caller (or noise) that never stops is cut here and decoded as is
CLOSED_KINDS = frozenset({"yes_no", "digits", "menu", "city"})

# Spoken Spanish digits as Vosk writes them (lower case, no accents needed for the small model's vocabulary).
SPOKEN_DIGITS = {
    "cero": "0", "uno": "1", "una": "1", "dos": "2", "tres": "3", "cuatro": "4", "cinco": "5",
    "seis": "6", "siete": "7", "ocho": "8", "nueve": "9",
}


def spoken_digits(text: str) -> str:
    """The digit string in a recognized text: numerals kept, Spanish digit words converted, the rest ignored."""
    out = []
    for word in text.lower().split():
        if word.isdigit():
            out.append(word)
        elif word in SPOKEN_DIGITS:
            out.append(SPOKEN_DIGITS[word])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    silence_ms_free: int
    silence_ms_closed: int
    silence_ms_digits: int | None = None     # an incomplete spoken digit string (None: silence_ms_closed)


class Endpointer:
    """Tracks one utterance and says when it is over."""

    def __init__(self, config: EndpointConfig, expect: Expect | None = None) -> None:
        self.config = config
        self.expect = expect or Expect()
        self._last_partial = ""
        self._partial_changed_at: float | None = None
        # the last reading of the utterance so far: (last voiced frame it covered, digits heard or None for text)
        self._peek: tuple[float, int | None] | None = None

    def set_expect(self, expect: Expect) -> None:
        self.expect = expect

    @property
    def expected_digits(self) -> int | None:
        """The digit count a complete answer has, when the prompt states one (a digits prompt of 2+ digits)."""
        if self.expect.kind == "digits" and self.expect.max_digits >= 2:
            return self.expect.max_digits
        return None

    @property
    def digits_wait(self) -> bool:
        """The prompt expects a digit string of a known length and the wait for its next group is on."""
        return self.expected_digits is not None \
            and (self.config.silence_ms_digits or 0) > self.config.silence_ms_closed

    def wants_peek(self, *, last_voiced_at: float | None, now: float) -> bool:
        """Time to read the digits heard so far: a closed answer's silence has passed, the string may be done."""
        return self.digits_wait and last_voiced_at is not None \
            and (now - last_voiced_at) * 1000 + 1e-6 >= self.config.silence_ms_closed

    def on_peek(self, text: str, voiced_at: float | None) -> None:
        """The reading of the utterance up to the voiced frame at `voiced_at` (the recognizer's mapped text)."""
        if voiced_at is not None:
            self._peek = (voiced_at, digit_string_len(text))

    def _wait_ms(self, last_voiced_at: float) -> int:
        """Trailing silence for an expected digit string: until the reading of this pause is in, the longer wait
        (it is also the cap on a slow reading); then the wait only for a digit string still short of its digits."""
        closed = self.config.silence_ms_closed
        wait = self.config.silence_ms_digits or closed
        if self._peek is None or self._peek[0] != last_voiced_at:
            return wait
        heard = self._peek[1]
        want = self.expected_digits or 0
        if heard is None:
            return closed                 # words ("no lo tengo", "asesor"): not a digit string being read
        return 0 if heard >= want else wait   # complete: the reading is the answer; short: wait for the rest

    def silence_threshold_ms(self, last_voiced_at: float | None = None) -> int:
        if self.digits_wait and last_voiced_at is not None:
            return self._wait_ms(last_voiced_at)
        if self.expect.kind in CLOSED_KINDS:
            return self.config.silence_ms_closed
        return self.config.silence_ms_free

    def on_partial(self, text: str, now: float) -> None:
        if text != self._last_partial:
            self._last_partial = text
            self._partial_changed_at = now

    def digits_complete(self, text: str) -> bool:
        """A spoken digit string with `max_digits` digits needs no trailing silence."""
        return self.expect.kind == "digits" and len(spoken_digits(text)) >= self.expect.max_digits

    def is_end(self, *, confirmed: bool, last_voiced_at: float | None, speech_started_at: float | None,
               now: float) -> bool:
        """True when the confirmed utterance has had enough trailing silence (or has gone on too long)."""
        if not confirmed or last_voiced_at is None:
            return False
        if speech_started_at is not None and now - speech_started_at >= MAX_UTTERANCE_S:
            return True
        # a streaming decoder's partial (Vosk) that completes the digit string; with the wait, only the reading of
        # this very pause counts (`_wait_ms`): a slow reading of an earlier pause may have heard a loop of digits
        if not self.digits_wait and self._last_partial and self.digits_complete(self._last_partial):
            return True
        quiet_since = last_voiced_at
        # a peek's text is not more speech: the wait for the next group counts from the last voiced frame
        if not self.digits_wait and self._partial_changed_at is not None and self._partial_changed_at > quiet_since:
            quiet_since = self._partial_changed_at
        threshold = self.silence_threshold_ms(last_voiced_at)
        return (now - quiet_since) * 1000 + 1e-6 >= threshold   # 1e-6: float sums of 20 ms

    def reset(self) -> None:
        self._last_partial = ""
        self._partial_changed_at = None
        self._peek = None


def digit_string_len(text: str) -> int | None:
    """How many digits `text` is when it is only a digit string ("1765", "uno siete 6"; "" is 0: nothing came
    out, which for a digit string is mostly a reading the recognizer's guards refused), else None (words)."""
    words = text.lower().split()
    if not all(w.isdigit() or w in SPOKEN_DIGITS for w in words):
        return None
    return len(spoken_digits(text))

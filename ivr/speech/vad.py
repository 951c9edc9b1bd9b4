"""Turn-taking as pure state machines: is the caller speaking, and may that speech cut the prompt playing now?

No I/O and no clock of their own: every call passes the time (seconds, any monotonic origin) and per-frame
facts, so the logic is unit-tested with plain numbers.

Caller states, fed one 20 ms frame at a time with "voiced or not" (energy above the VAD threshold, or the speech
detector's verdict, `ivr.speech.speech_vad`):

    QUIET --voiced--> STARTING --voiced for start_ms--> SPEAKING --unvoiced past hangover--> STOPPING
      ^                  |  (unvoiced past hangover: a click, back to QUIET)        ^            |
      +------------------+                                                         +--voiced----+
    STOPPING holds until the endpointer ends the utterance (`reset()`), because only it knows how much
    trailing silence the expected answer needs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ivr.speech.frames import FRAME_MS

START_MS = 60            # voiced time that turns a blip into speech (3 frames): a single click never does
HANGOVER_MS = 200        # unvoiced time tolerated inside speech (stops, plosives, short pauses between words)
BARGE_IN_NO_WORDS_FACTOR = 3   # without any recognized word, barge-in needs this many times the minimum voiced time
# ... unless a speech detector (Silero) decided the voiced time: it does not call coughs, clicks or line noise
# speech, and a one-word answer ("tres", ~400 ms) must be able to stop a prompt before its result is decoded.
SPEECH_VAD_NO_WORDS_FACTOR = 1.5


class CallerState(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class VadTransition:
    before: CallerState
    after: CallerState
    at: float


class CallerTurnTracker:
    """Per-frame VAD with hangover: tracks the caller's state and voiced/silent durations of the utterance."""

    def __init__(self, threshold_db: float, *, start_ms: int = START_MS, hangover_ms: int = HANGOVER_MS,
                 frame_ms: int = FRAME_MS) -> None:
        self.threshold_db = threshold_db
        self.start_ms = start_ms
        self.hangover_ms = hangover_ms
        self.frame_ms = frame_ms
        self.state = CallerState.QUIET
        self.voiced_ms = 0            # voiced time in the current utterance (since STARTING)
        self.silence_ms = 0           # unvoiced time since the last voiced frame
        self.speech_started_at: float | None = None   # time of the first voiced frame of the utterance
        self.last_voiced_at: float | None = None      # end time of the last voiced frame

    def is_voiced(self, energy_db: float) -> bool:
        return energy_db >= self.threshold_db

    def push(self, energy_db: float, now: float) -> VadTransition | None:
        """Account one frame of `energy_db` ending at `now`; return the state change it causes, if any."""
        return self.push_voiced(self.is_voiced(energy_db), now)

    def push_voiced(self, voiced: bool, now: float) -> VadTransition | None:
        """Account one frame ending at `now` that a detector (`ivr.speech.speech_vad`) called voiced or not."""
        before = self.state
        if voiced:
            self.silence_ms = 0
            self.last_voiced_at = now
            if self.state is CallerState.QUIET:
                self.state = CallerState.STARTING
                self.voiced_ms = 0
                self.speech_started_at = now - self.frame_ms / 1000
            self.voiced_ms += self.frame_ms
            if self.state is CallerState.STARTING and self.voiced_ms >= self.start_ms:
                self.state = CallerState.SPEAKING
            elif self.state is CallerState.STOPPING:
                self.state = CallerState.SPEAKING
        else:
            self.silence_ms += self.frame_ms
            if self.silence_ms > self.hangover_ms:
                if self.state is CallerState.STARTING:
                    self.reset()
                elif self.state is CallerState.SPEAKING:
                    self.state = CallerState.STOPPING
        if self.state is before:
            return None
        return VadTransition(before, self.state, now)

    @property
    def in_utterance(self) -> bool:
        """True from the first voiced frame until the utterance is ended or dismissed as a click."""
        return self.state is not CallerState.QUIET

    @property
    def confirmed(self) -> bool:
        """True once the utterance is speech (SPEAKING or STOPPING), not a blip."""
        return self.state in (CallerState.SPEAKING, CallerState.STOPPING)

    def reset(self) -> None:
        """End the utterance (endpoint reached, or a blip dismissed)."""
        self.state = CallerState.QUIET
        self.voiced_ms = 0
        self.speech_started_at = None


@dataclass(frozen=True, slots=True)
class BargeInGuard:
    """Decides whether caller speech over a prompt is real enough to stop it.

    Speech must be voiced for `min_speech_ms` AND either carry a recognized word (a non-empty partial) or last
    `BARGE_IN_NO_WORDS_FACTOR` times longer: a cough or a click is short and wordless, line noise is wordless.
    """
    min_speech_ms: int

    def should_interrupt(self, *, allow_barge_in: bool, voiced_ms: int, partial: str,
                         speech_vad: bool = False) -> bool:
        if not allow_barge_in:
            return False
        if voiced_ms < self.min_speech_ms:
            return False
        has_words = bool(partial.replace("[unk]", "").strip())
        factor = SPEECH_VAD_NO_WORDS_FACTOR if speech_vad else BARGE_IN_NO_WORDS_FACTOR
        return has_words or voiced_ms >= self.min_speech_ms * factor

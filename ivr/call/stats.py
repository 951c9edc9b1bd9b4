"""What one call's detail record counts while the call goes: caller turns (speech / keypad), intents, cities asked,
no-match and no-input per prompt (dialogue step), barge-ins, the transfer reason, the turn latencies, and how the
call was degraded by recognizer overload (ivr.call.overload): hold phrases said, utterances whose decode was dropped
and asked on the keypad instead.

The session updates it in place (plain counters: no I/O, nothing that can fail the call) and hands `summary()` to
the recorder once, when the call ends. A prompt is named by its question (the last text said, secrets masked).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from foundation.logs import scrub
from foundation.vocabulary import NO_MATCH_INTENTS

MAX_STEP_CHARS = 120


def step_name(texts: Sequence[str]) -> str:
    """The question a prompt asks: its last non-empty text, masked, shortened."""
    for text in reversed(texts):
        if text.strip():
            return " ".join(scrub(text).split())[:MAX_STEP_CHARS]
    return "-"


@dataclass
class CallStats:
    speech_turns: int = 0
    dtmf_turns: int = 0
    barge_ins: int = 0
    no_match: int = 0
    no_input: int = 0
    asr_holds: int = 0          # "Un momento, por favor." said while a final was late (asr.max_wait_ms)
    asr_dropped: int = 0        # utterances not decoded in time (asr.max_wait_keypad_ms): asked on the keypad
    transfer_reason: str | None = None
    step: str = "-"
    intents: Counter[str] = field(default_factory=Counter)
    cities: Counter[str] = field(default_factory=Counter)
    asked: Counter[str] = field(default_factory=Counter)
    step_no_match: Counter[str] = field(default_factory=Counter)
    step_no_input: Counter[str] = field(default_factory=Counter)

    def ask(self, texts: Sequence[str]) -> None:
        self.step = step_name(texts)
        self.asked[self.step] += 1

    def reask(self) -> None:
        """The same prompt again after a no-match / no-input: `asked` counts attempts, so a rate stays <= 1."""
        self.asked[self.step] += 1

    def caller_turn(self, *, dtmf: bool, expect_kind: str, text: str | None, intent: str | None) -> None:
        if dtmf:
            self.dtmf_turns += 1
        else:
            self.speech_turns += 1
        if intent:
            self.intents[intent] += 1
        if expect_kind == "city" and text and not dtmf and intent not in NO_MATCH_INTENTS:
            self.cities[" ".join(text.lower().split())[:60]] += 1

    def missed(self, kind: str) -> None:
        """A no-match or a no-input on the current prompt."""
        if kind == "no_match":
            self.no_match += 1
            self.step_no_match[self.step] += 1
        else:
            self.no_input += 1
            self.step_no_input[self.step] += 1

    def summary(self, latencies_s: Sequence[float], worker: str = "") -> dict[str, Any]:
        ms = sorted(max(0, round(x * 1000)) for x in latencies_s)
        tallies: list[list[Any]] = []
        for kind, counter in (("intent", self.intents), ("city", self.cities), ("asked", self.asked),
                              ("no_match", self.step_no_match), ("no_input", self.step_no_input)):
            tallies.extend([kind, key, n] for key, n in counter.items())
        return {
            "turns_count": self.speech_turns + self.dtmf_turns, "speech_turns": self.speech_turns,
            "dtmf_turns": self.dtmf_turns, "no_match_count": self.no_match, "no_input_count": self.no_input,
            "barge_ins": self.barge_ins, "asr_holds": self.asr_holds, "asr_dropped": self.asr_dropped,
            "latency_p50_ms": ms[(len(ms) - 1) // 2] if ms else None,
            "latency_max_ms": ms[-1] if ms else None, "transfer_reason": self.transfer_reason,
            "worker": worker, "tallies": tallies,
        }

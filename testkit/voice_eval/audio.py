"""A script turn as the audio the portal receives: the human recordings (testkit.human_speech) or espeak-ng for
words no recording has, then the channel model (noise at the caller's end, packet loss, the G.711 μ-law leg).

espeak-ng is the weak part: Whisper base heard espeak-ng Spanish with 48-65 % WER (folios 0/10), so a script
that says something with `say:` measures the dialogue more than the recognizer; its WER is reported apart.
"""
from __future__ import annotations

import numpy as np

from ivr.caller import speak
from testkit import human_speech as hs
from testkit.voice_eval.script import Channel, ScriptTurn

RATE = hs.RATE
LEAD_MS = 300                 # a caller draws breath before speaking; the VAD's pre-roll needs some lead too
TAIL_MS = 700
PACKET_MS = 20
GROUP_PAUSE_MS = 800          # a space in a digits turn: the caller pauses between groups ("1765 4354")


def reference_text(turn: ScriptTurn) -> str:
    """What the caller said, for WER: digits one word each, a recording's transcript, the espeak-ng text."""
    if turn.kind == "digits":
        return " ".join(hs.number_words(int(d)) for d in turn.value if d.isdigit())
    if turn.kind == "human":
        return hs.recording(turn.value).text
    return turn.value


def source_pcm(turn: ScriptTurn) -> bytes:
    if turn.kind == "digits":
        groups = ["".join(d for d in g if d.isdigit()) for g in turn.value.split()]
        groups = [g for g in groups if g]
        if not groups:
            raise ValueError(f"digits turn {turn.value!r} has no digits")
        pause = b"\x00\x00" * (RATE * GROUP_PAUSE_MS // 1000)
        return pause.join(hs.splice_digits(g, gap_ms=150) for g in groups)
    if turn.kind == "human":
        return hs.trim(hs.recording(turn.value).pcm())
    if turn.kind == "say":
        return hs.trim(speak(turn.value))
    raise ValueError(f"turn kind {turn.kind!r} has no audio")


def lose_packets(pcm: bytes, loss: float, seed: int) -> bytes:
    """Each 20 ms packet is lost with probability `loss`; a lost packet is silence (the worst concealment)."""
    if loss <= 0:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").copy()
    n = RATE * PACKET_MS // 1000
    rng = np.random.default_rng(seed)
    for start in range(0, x.size, n):
        if rng.random() < loss:
            x[start:start + n] = 0
    return x.tobytes()


def render(turn: ScriptTurn, channel: Channel, index: int = 0) -> bytes:
    """The turn's audio as received by the portal, s16le 8 kHz, with lead and tail silence."""
    pcm = hs.pad(source_pcm(turn), LEAD_MS, TAIL_MS)
    seed = channel.seed * 1000 + index
    if channel.snr_db is not None:
        pcm = hs.add_noise(pcm, channel.snr_db, kind=channel.noise, seed=seed)
    pcm = lose_packets(pcm, channel.loss, seed)
    return hs.mulaw_channel(pcm) if channel.mulaw else pcm

"""What the stream hands Whisper for a one-word answer, and whether it is heard: the stream's own Silero VAD and
endpointer (not an onset cut by hand), the human speaker's one-word answers (bench/asr_closed.py's ten digits at a
menu and sí/no at a yes/no prompt) over the G.711 μ-law leg, 1.3 s of line before the word (as after a prompt),
700 ms after it (as testkit.voice_eval does), clean or with white noise at 20 / 10 dB SNR, and optionally a
breath-like blip (80 ms of another phrase at half level) 220-300 ms before the word, which the VAD may open on and
dismiss.

Per pre-roll (`asr.preroll_ms`): answers heard (the right closed answer after rescoring), the VAD's onset lag behind
the word (first voiced frame - the word's trimmed onset), the lead the decode gets before the word's onset (pre-roll
- lag), the real tail after the word's end (the endpointer's closed silence after the VAD's last voiced frame; the
window then adds `tail_pad_s` of zeros), and the decode's time p50.

Usage: .venv/bin/python bench/asr_stream.py [--prerolls 300,500] [--channels clean,noise20,noise10] [--blip]
       [--seeds 2] [--show]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
from asr_closed import MENU, NAMES, YES_NO, YES_NO_WORDS, head

from foundation.config import load_settings
from ivr.speech.answers import closed_answer
from ivr.speech.endpointing import EndpointConfig
from ivr.speech.expect import Expect
from ivr.speech.frames import AudioFrame, frame_bytes
from ivr.speech.recognizer import Final, RecognizeStream, StreamConfig
from ivr.speech.speech_vad import preload_silero
from ivr.speech.whisper import WhisperDecoder, WhisperModel, WhisperOptions
from testkit import human_speech as hs
from voice_models.whisper import locate_whisper

FB = frame_bytes(hs.RATE)
BEFORE_MS, AFTER_MS = 1300, 700
SNR = {"clean": None, "noise20": 20.0, "noise10": 10.0}
WORDS = [(f"digits/{d}", None, NAMES[d], MENU) for d in range(10)] + [(n, k, a, YES_NO) for n, k, a in YES_NO_WORDS]


@dataclass(frozen=True, slots=True)
class Heard:
    text: str
    lead_ms: float            # audio handed to Whisper before the word's onset (negative: the onset was cut)
    tail_ms: float            # real audio handed after the word's end
    lag_ms: float             # the VAD's first voiced frame after the word's onset
    decode_s: float


class _Capture(WhisperDecoder):
    """The decoder as the stream drives it, keeping what each final was handed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.handed: list[tuple[bytes, float]] = []

    def final(self) -> tuple[str, float | None]:
        pcm = bytes(self._buf)
        t0 = time.perf_counter()
        out = super().final()
        self.handed.append((pcm, time.perf_counter() - t0))
        return out


def blip(seed: int) -> bytes:
    x = np.frombuffer(hs.trim(hs.recording("vm-goodbye").pcm()), dtype="<i2").astype(np.float32)
    n = hs.RATE * 80 // 1000
    start = (seed * 997) % (x.size - n)
    return (x[start:start + n] * np.hanning(n) * 0.5).astype("<i2").tobytes()


async def hear(model: WhisperModel, opt: WhisperOptions, pcm: bytes, onset: int, end: int, expect: Expect,
               preroll_ms: int, silence_ms_closed: int) -> Heard | None:
    """Feed `pcm` (s16le 8 kHz; the word at byte offsets onset..end) through a stream; the utterance that holds the
    word, or None when the VAD opened none on it."""
    cfg = StreamConfig(vad_threshold_db=-40.0, preroll_ms=preroll_ms, vad="silero",
                       endpoint=EndpointConfig(900, silence_ms_closed, None))
    decoder = _Capture(model, hs.RATE, options=opt)
    stream = RecognizeStream(lambda: decoder, None, cfg, sample_rate=hs.RATE)
    stream.set_expect(expect)
    stream.start()
    pcm += b"\0\0" * hs.RATE * 2
    ends: list[int] = []
    starts: list[int] = []             # where the VAD opened each utterance (a dismissed blip's too)
    was_open = False
    for i in range(len(pcm) // FB):
        stream.push_frame(AudioFrame(pcm[i * FB:(i + 1) * FB], hs.RATE, (i + 1) * 0.02))
        if stream.vad.in_utterance and not was_open:
            starts.append(i * FB)
        was_open = stream.vad.in_utterance
        if stream.utterances_ended > len(ends):
            ends.append((i + 1) * FB)
        await asyncio.sleep(0)
    finals: list[Final] = []
    async with asyncio.timeout(120):
        while len(finals) < len(ends):
            event = await stream.get()
            if isinstance(event, Final):
                finals.append(event)
    await stream.aclose()
    for final, stop, (handed, took) in zip(finals, ends, decoder.handed, strict=True):
        start = stop - len(handed)
        if start <= onset + 4000 and stop >= end:       # the utterance that holds the word
            ms = 1000 / (2 * hs.RATE)
            lag = (max(s for s in starts if s < stop) - onset) * ms
            return Heard(final.text, (onset - start) * ms, (stop - end) * ms, lag, took)
    return None


async def run(args: argparse.Namespace) -> None:
    preload_silero()
    opt = replace(WhisperOptions(), max_decode_s=60.0)
    model = WhisperModel(locate_whisper(), options=opt)
    closed_ms = load_settings().turns.endpoint_silence_ms_closed
    print(f"whisper base int8 1 thread, silero VAD, closed endpoint {closed_ms} ms, window pad {opt.tail_pad_s} s; "
          f"load {os.getloadavg()[0]:.2f}")
    print("| pre-roll | clips | heard | VAD lag p50 / max | lead before the word p50 / min | lead under 150 ms "
          "| real tail p50 / min | decode p50 |")
    print("|---|---|---|---|---|---|---|---|")
    for preroll in [int(v) for v in args.prerolls.split(",")]:
        n = heard = 0
        lags, leads, tails, took = [], [], [], []
        for channel in args.channels.split(","):
            for seed in range(1, args.seeds + 1):
                for i, (name, keep, answer, expect) in enumerate(WORDS):
                    word = head(name, keep)
                    before = hs.pad(b"", BEFORE_MS)
                    if args.blip:
                        gap = (220, 260, 300)[(i + seed) % 3]
                        before = hs.pad(b"", BEFORE_MS - 80 - gap) + blip(seed * 100 + i) + hs.pad(b"", gap)
                    pcm = hs.channel(before + word + hs.pad(b"", AFTER_MS), snr_db=SNR[channel],
                                     seed=seed * 1000 + i)
                    onset = len(before)
                    got = await hear(model, opt, pcm, onset, onset + len(word), expect, preroll, closed_ms)
                    n += 1
                    ok = got is not None and closed_answer(got.text, expect) == answer
                    heard += ok
                    if got is not None:
                        lags.append(got.lag_ms)
                        leads.append(got.lead_ms)
                        tails.append(got.tail_ms)
                        took.append(got.decode_s)
                    if args.show and not ok:
                        print(f"  missed {answer} {channel} seed {seed}: {got}", flush=True)
        lag = [v for v in lags if v == v]
        print(f"| {preroll} ms | {n} | {heard} | {statistics.median(lag):.0f} / {max(lag):.0f} ms | "
              f"{statistics.median(leads):.0f} / {min(leads):.0f} ms | {sum(v < 150 for v in leads)} | "
              f"{statistics.median(tails):.0f} / "
              f"{min(tails):.0f} ms | {statistics.median(took) * 1000:.0f} ms |", flush=True)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prerolls", default="300", help="asr.preroll_ms values to compare")
    ap.add_argument("--channels", default=",".join(SNR))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--blip", action="store_true", help="a breath-like blip 220-300 ms before each word")
    ap.add_argument("--show", action="store_true", help="print every clip not heard")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()

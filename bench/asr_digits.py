"""Spoken digit strings through Whisper: folio (8 digits) and PIN (4 digits) exact rate by reading style and channel.

Reading styles (human Mexican Spanish speaker, Debian asterisk-core-sounds-es-wav, spliced):
- tight: digits 40-70 ms apart (a fast reader; words nearly run together)
- natural: 150-350 ms between digits, random
- grouped: digits in groups (4+4 for a folio, 2+2 for a PIN) with a 600-800 ms pause between groups; played
  through the whole RecognizeStream (speech VAD + endpointer), so a pause that ends the turn counts as a failure
- pairs: read as two-digit numbers ("diecisiete sesenta y cinco ..."), 150-300 ms apart
- voice: natural, with the speaker's voice shifted +-7 % in pitch and tempo (another speaker, roughly)
- menu: "tres" at a menu, then after 600-1000 ms (over the closed 450 ms) the folio (digits) or PIN, in one stream that switches to the
  digit prompt when the menu answer's final comes (a quick caller): exact = "tres" alone, then the string alone;
  a menu answer that waited for a "next group" would merge with it
The stream styles (grouped, menu) run in real time with the config's endpointing (turns.endpoint_silence_ms_*,
or --wait-ms for the digit-string wait) and print the time from the end of the last speech to the final.
Channels: μ-law; white noise 20 dB and 10 dB; babble 10 dB. Strings use their own seed (not the unit tests').

Usage: .venv/bin/python bench/asr_digits.py [--n 8] [--styles ...] [--channels ...] [--beam N] [--wait-ms MS]
       [--group-pause 600,800]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from foundation.config import load_settings
from ivr.speech.audio_ops import resample
from ivr.speech.endpointing import EndpointConfig
from ivr.speech.expect import Expect
from ivr.speech.recognizer import Final, StreamConfig
from ivr.speech.whisper import WhisperDecoder, WhisperModel, WhisperOptions, WhisperRecognizer
from testkit import human_speech as hs
from testkit.fakes import frames_of
from voice_models.whisper import locate_whisper

CHANNELS = {"mulaw": {}, "noise20": {"snr_db": 20.0}, "noise10": {"snr_db": 10.0},
            "babble10": {"snr_db": 10.0, "noise": "babble"}}
STYLES = ("tight", "natural", "grouped", "pairs", "voice", "menu")
STREAM_STYLES = ("grouped", "menu")
MENU = Expect(kind="menu", phrases=("uno", "dos", "tres", "cero", "turismo", "trámites", "estado de mi trámite",
                                    "asesor"), max_digits=1)
LEAD_MS = 300


def _silence(ms: int) -> bytes:
    return b"\x00\x00" * (hs.RATE * ms // 1000)


def _rec(name: str) -> bytes:
    return hs.trim(hs.recording(name).pcm())


def pair_pcm(two: str) -> bytes:
    """A two-digit group as a number: "07" -> "cero siete", "17" -> "diecisiete", "65" -> "sesenta y cinco"."""
    n = int(two)
    if two[0] == "0":
        return hs.digit_pcm("0") + _silence(80) + hs.digit_pcm(two[1])
    if n < 30 or n % 10 == 0:
        return _rec(f"digits/{n}")
    return _rec(f"digits/{n - n % 10}") + _silence(40) + _rec("digits/and") + _silence(40) + hs.digit_pcm(str(n % 10))


GROUP_PAUSE_MS = (600, 800)


def read_aloud(digits: str, style: str, rng: np.random.Generator) -> bytes:
    if style == "pairs":
        groups = [digits[i:i + 2] for i in range(0, len(digits), 2)]
        parts = [pair_pcm(g) for g in groups]
        return b"".join(p + _silence(int(rng.integers(150, 300))) for p in parts)[: -2]
    group = 4 if len(digits) >= 8 else 2
    out = bytearray()
    for i, d in enumerate(digits):
        if i:
            if style == "tight":
                gap = int(rng.integers(40, 70))
            elif style == "grouped" and i % group == 0:
                gap = int(rng.integers(GROUP_PAUSE_MS[0], GROUP_PAUSE_MS[1] + 1))
            else:
                gap = int(rng.integers(150, 350))
            out += _silence(gap)
        out += hs.digit_pcm(d)
    pcm = bytes(out)
    if style == "voice":
        # resampling by f and playing at the original rate shifts pitch and tempo by 1/f
        factor = float(rng.choice([0.93, 1.07]))
        pcm = resample(pcm, hs.RATE, int(round(hs.RATE * factor)))
    return pcm


def strings(n: int, seed: int) -> list[tuple[str, str]]:
    folios = hs.folios(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    pins = ["".join(str(d) for d in rng.integers(0, 10, 4)) for _ in range(n)]
    return [("folio", f) for f in folios] + [("pin", p) for p in pins]


def decode_whole(decoder: WhisperDecoder, pcm: bytes) -> str:
    decoder.accept(pcm)
    return decoder.final()[0]


async def decode_stream(rec: WhisperRecognizer, pcm: bytes, expects: list[Expect]) -> tuple[list[str], float]:
    """Through RecognizeStream in real time: the finals of the first len(expects) utterances (the stream takes the
    next expectation when a final comes, as a call does), and seconds from the end of the last speech to the
    last of them."""
    stream = rec.stream("bench", hs.RATE)
    finals: list[str] = []
    last_at = 0.0
    try:
        stream.set_expect(expects[0])
        t0 = time.monotonic()

        async def collect() -> None:
            nonlocal last_at
            while len(finals) < len(expects):
                event = await stream.get()
                if isinstance(event, Final):
                    finals.append(event.text)
                    last_at = time.monotonic() - t0
                    if len(finals) < len(expects):
                        stream.set_expect(expects[len(finals)])
        collector = asyncio.create_task(collect())
        for frame in frames_of(pcm):
            stream.push_frame(frame)
            await asyncio.sleep(0.02)
            if collector.done():
                break
        try:
            async with asyncio.timeout(30):
                await collector
        except TimeoutError:
            collector.cancel()
        return finals, last_at
    finally:
        await stream.aclose()


def speech_end_s(pcm: bytes) -> float:
    """Where the speech in `pcm` ends (s), trailing silence excluded."""
    x = np.abs(np.frombuffer(pcm, dtype="<i2"))
    voiced = np.nonzero(x > 200)[0]
    return float(voiced[-1]) / hs.RATE if voiced.size else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8, help="folios and as many PINs per cell")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--styles", default="tight,natural,pairs,voice")
    ap.add_argument("--channels", default=",".join(CHANNELS))
    ap.add_argument("--digits-beam", type=int, default=None)
    ap.add_argument("--digits-rp", type=float, default=None, help="repetition penalty in the digit mode")
    ap.add_argument("--digits-hyp", type=int, default=None, help="beam readings kept for the length check")
    ap.add_argument("--wait-ms", type=int, default=None,
                    help="turns.endpoint_silence_ms_digits for the stream styles (default: the config's)")
    ap.add_argument("--group-pause", default=None, help="MIN,MAX ms between groups in the grouped style")
    ap.add_argument("--show", action="store_true", help="print every miss")
    args = ap.parse_args()
    global GROUP_PAUSE_MS
    if args.group_pause:
        lo, hi = (int(v) for v in args.group_pause.split(","))
        GROUP_PAUSE_MS = (lo, hi)
    opt = replace(WhisperOptions(), max_decode_s=60.0)
    if args.digits_beam:
        opt = replace(opt, digits_beam_size=args.digits_beam)
    if args.digits_rp:
        opt = replace(opt, digits_repetition_penalty=args.digits_rp)
    if args.digits_hyp:
        opt = replace(opt, digits_hypotheses=args.digits_hyp)
    model = WhisperModel(locate_whisper(), options=opt)
    items = strings(args.n, args.seed)
    pool = ThreadPoolExecutor(1)
    turns = load_settings().turns     # config/veratur.yml's endpointing, as the engine builds it (ivr.engine)
    wait = args.wait_ms if args.wait_ms is not None else turns.endpoint_silence_ms_digits
    endpoint = EndpointConfig(turns.endpoint_silence_ms_free, turns.endpoint_silence_ms_closed, wait)
    rec = WhisperRecognizer(model, pool, StreamConfig(-40.0, 300, endpoint, vad="silero"))
    print(f"endpointing: free {endpoint.silence_ms_free} ms, closed {endpoint.silence_ms_closed} ms, digit-string "
          f"wait {wait} ms{' (off)' if wait <= endpoint.silence_ms_closed else ''}; group pause "
          f"{GROUP_PAUSE_MS[0]}-{GROUP_PAUSE_MS[1]} ms")
    mode = {k: getattr(opt, k, None) for k in ("digits_beam_size", "digits_repetition_penalty", "digits_hypotheses")}
    print(f"whisper base int8 1 thread; digit mode {mode}; {args.n} folios + {args.n} PINs per cell")
    total_ok, total = 0, 0
    for style in args.styles.split(","):
        for ch in args.channels.split(","):
            kw = CHANNELS[ch]
            rng = np.random.default_rng(args.seed + STYLES.index(style))
            ok = {"folio": 0, "pin": 0}
            lat: list[float] = []
            for i, (kind, digits) in enumerate(items):
                expect = Expect(kind="digits", max_digits=8 if kind == "folio" else 4, secret=kind == "pin")
                # stream styles: 2 s after the last group, so an incomplete string's wait can end in the stream
                tail = 2000 if style in STREAM_STYLES else 700
                if style == "menu":
                    speech = hs.digit_pcm("3") + _silence(int(rng.integers(600, 1001))) \
                        + read_aloud(digits, "natural", rng)
                else:
                    speech = read_aloud(digits, style, rng)
                pcm = hs.channel(hs.pad(speech, LEAD_MS, tail), seed=i + 1, **kw)  # type: ignore[arg-type]
                t0 = time.perf_counter()
                if style in STREAM_STYLES:
                    expects = [MENU, expect] if style == "menu" else [expect]
                    finals, final_at = asyncio.run(decode_stream(rec, pcm, expects))
                    want = ["tres", digits] if style == "menu" else [digits]
                    heard = digits if finals == want else " | ".join(finals) or "<no final>"
                    lat.append(final_at - speech_end_s(pcm))
                else:
                    dec = WhisperDecoder(model, hs.RATE, options=opt)
                    dec.set_expect(expect)
                    heard = decode_whole(dec, pcm)
                if style not in STREAM_STYLES:
                    lat.append(time.perf_counter() - t0)
                hit = heard == digits
                ok[kind] += hit
                if not hit and args.show:
                    print(f"   miss {style}/{ch} {kind} {digits} -> {heard!r}")
            total_ok += ok["folio"] + ok["pin"]
            total += len(items)
            what = "speech end -> final" if style in STREAM_STYLES else "decode"
            lat_note = f"  {what} p50 {statistics.median(lat):.2f}s max {max(lat):.2f}s"
            print(f"{style:8} {ch:8} folio {ok['folio']}/{args.n}  PIN {ok['pin']}/{args.n}{lat_note}", flush=True)
    print(f"all: {total_ok}/{total} exact ({total_ok / total:.1%})")
    pool.shutdown()


if __name__ == "__main__":
    main()

"""Whisper on human Spanish speech: WER and folio accuracy by condition, decode latency, CPU per second of speech,
RSS, hallucination rate on silence/noise. Usage: .venv/bin/python bench/asr.py [--beam N] [--window utterance|full]"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

from ivr.speech.answers import digits_in
from ivr.speech.whisper import WhisperModel, WhisperOptions
from testkit import human_speech as hs
from voice_models.whisper import locate_whisper

CONDITIONS = {"clean": {"mulaw": False}, "mulaw": {}, "noise20": {"snr_db": 20.0}, "noise10": {"snr_db": 10.0}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--window", choices=["utterance", "full"], default="utterance")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    args = ap.parse_args()
    opt = WhisperOptions(beam_size=args.beam, window=args.window, max_decode_s=60.0)
    model = WhisperModel(locate_whisper(), options=opt)
    phrases, folios = hs.phrase_subset(), hs.folios(10)
    print(f"whisper base int8 1 thread, beam {args.beam}, window {args.window}; {len(phrases)} phrases, "
          f"{len(folios)} folios")
    for name in args.conditions.split(","):
        kw = CONDITIONS[name]
        lat, cpu, audio = [], 0.0, 0.0
        hyps = []
        for r in phrases:
            pcm = hs.channel(r.pcm(), **kw)  # type: ignore[arg-type]
            c0 = time.process_time()
            res = model.transcribe(pcm, hs.RATE)
            cpu += time.process_time() - c0
            audio += res.audio_s
            lat.append(res.decode_s)
            hyps.append(res.text)
        ok = 0
        for f in folios:
            res = model.transcribe(hs.channel(hs.splice_digits(f, lead_ms=200, tail_ms=300), **kw), hs.RATE)  # type: ignore[arg-type]
            ok += digits_in(res.text)[0] == f
            lat.append(res.decode_s)
        print(f"{name:8} WER {hs.wer([r.text for r in phrases], hyps):.3f}  folios {ok}/{len(folios)}  "
              f"decode p50 {statistics.median(lat):.3f}s max {max(lat):.3f}s  CPU/s speech {cpu / audio:.3f}",
              flush=True)
    texts = 0
    trials = [(k, lvl) for k in ("white", "pink", "babble") for lvl in (-50.0, -30.0)] + [("silence", 0.0)]
    for kind, lvl in trials:
        pcm = b"\x00\x00" * 24000 if kind == "silence" else hs.noise_pcm(3000, lvl, kind=kind)
        texts += bool(model.transcribe(hs.mulaw_channel(pcm), hs.RATE).text)
    print(f"hallucination: {texts}/{len(trials)} non-speech inputs produced text (decoded without VAD)")
    print(f"RSS max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

"""Whisper on human Spanish speech: WER and folio accuracy by condition, one-word answers (repeats), decode latency,
real-time factor, CPU per second of speech, RSS, hallucination rate on silence/noise with and without the speech VAD.
Usage: .venv/bin/python bench/asr.py [--beam N] [--window utterance|full] [--no-timestamps] [--prompt TEXT]"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import replace

from ivr.speech.answers import fold
from ivr.speech.audio_ops import energy_db
from ivr.speech.expect import Expect
from ivr.speech.frames import frame_bytes
from ivr.speech.speech_vad import SileroVoicing, shared_silero
from ivr.speech.vad import CallerTurnTracker
from ivr.speech.whisper import WhisperDecoder, WhisperModel, WhisperOptions
from testkit import human_speech as hs
from voice_models.whisper import locate_whisper

CONDITIONS = {"clean": {"mulaw": False}, "mulaw": {}, "noise20": {"snr_db": 20.0}, "noise10": {"snr_db": 10.0}}
# One-word recordings said alone (not digits): free speech, scored exact after normalisation.
ONE_WORDS = ("auth-thankyou", "dictate/pause", "dictate/paused", "dictate/playback", "dictate/record", "hours",
             "minutes", "pbx-transfer", "dir-multi1", "letters/dot")
MENU = Expect(kind="menu", phrases=("turismo", "información de trámites", "estado de mi trámite", "asesor"))
NUMBER_NAMES = ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")


def vad_passes(pcm: bytes) -> bool:
    """Would the stream's speech VAD (Silero) open an utterance on this audio at all?"""
    det, tracker, fb = SileroVoicing(shared_silero(), hs.RATE), CallerTurnTracker(-40.0), frame_bytes(hs.RATE)
    for i in range(0, len(pcm) - fb + 1, fb):
        f = pcm[i:i + fb]
        tracker.push_voiced(det.voiced(f, energy_db(f)), (i // fb + 1) * 0.02)
        if tracker.confirmed:
            return True
    return False


def one_word_answers(model: WhisperModel, opt: WhisperOptions) -> None:
    dec = WhisperDecoder(model, hs.RATE, options=opt)
    dec.set_expect(MENU)
    ok, looped = 0, 0
    for d, name in enumerate(NUMBER_NAMES):
        dec.accept(hs.channel(hs.pad(hs.recording(f"digits/{d}").pcm(), 300, 450)))
        ok += dec.final()[0] == name
        assert dec.last is not None
        looped += len(set(fold(dec.last.raw).split())) < len(fold(dec.last.raw).split())
    free_ok, free_loop = 0, 0
    for n in ONE_WORDS:
        r = hs.recording(n)
        res = model.transcribe(hs.channel(hs.pad(r.pcm(), 300, 900)), hs.RATE, opt)
        free_ok += hs.normalize_text(res.text) == hs.normalize_text(r.text)
        free_loop += len(res.raw.split()) > 1 and len(set(fold(res.raw).split())) == 1
    print(f"one-word: digits said alone at a menu prompt {ok}/10 right ({looped} written with a repeat); "
          f"other single words {free_ok}/{len(ONE_WORDS)} exact ({free_loop} looped)", flush=True)


def main() -> None:
    base = WhisperOptions()
    ap = argparse.ArgumentParser()
    ap.add_argument("--beam", type=int, default=base.beam_size)
    ap.add_argument("--window", choices=["utterance", "full"], default=base.window)
    ap.add_argument("--no-timestamps", action="store_true")
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    args = ap.parse_args()
    opt = replace(base, beam_size=args.beam, window=args.window, max_decode_s=60.0,
                  timestamps=not args.no_timestamps, initial_prompt=args.prompt)
    model = WhisperModel(locate_whisper(), options=opt)
    phrases, folios = hs.phrase_subset(), hs.folios(10)
    print(f"whisper base int8 1 thread, beam {opt.beam_size}, window {opt.window}, timestamps {opt.timestamps}, "
          f"prompt {opt.initial_prompt!r}; {len(phrases)} phrases, {len(folios)} folios")
    one_word_answers(model, opt)
    digits = WhisperDecoder(model, hs.RATE, options=opt)
    digits.set_expect(Expect(kind="digits", max_digits=8))
    for name in args.conditions.split(","):
        kw = CONDITIONS[name]
        lat, cpu, audio, spent = [], 0.0, 0.0, 0.0
        hyps = []
        for r in phrases:
            pcm = hs.channel(r.pcm(), **kw)  # type: ignore[arg-type]
            c0 = time.process_time()
            res = model.transcribe(pcm, hs.RATE)
            cpu += time.process_time() - c0
            audio += res.audio_s
            spent += res.decode_s
            lat.append(res.decode_s)
            hyps.append(res.text)
        ok = 0
        for f in folios:
            digits.accept(hs.channel(hs.splice_digits(f, lead_ms=200, tail_ms=300), **kw))  # type: ignore[arg-type]
            ok += digits.final()[0] == f
            assert digits.last is not None
            lat.append(digits.last.decode_s)
        print(f"{name:8} WER {hs.wer([r.text for r in phrases], hyps):.3f}  folios {ok}/{len(folios)}  "
              f"decode p50 {statistics.median(lat):.3f}s max {max(lat):.3f}s  RTF {spent / audio:.3f}  "
              f"CPU/s speech {cpu / audio:.3f}", flush=True)
    texts, gated = 0, 0
    trials = [(k, lvl) for k in ("white", "pink", "babble") for lvl in (-50.0, -30.0)] + [("silence", 0.0)]
    for kind, lvl in trials:
        pcm = b"\x00\x00" * 24000 if kind == "silence" else hs.noise_pcm(3000, lvl, kind=kind)
        pcm = hs.mulaw_channel(pcm)
        text = bool(model.transcribe(pcm, hs.RATE).text)
        texts += text
        gated += text and vad_passes(pcm)
    print(f"hallucination: {texts}/{len(trials)} non-speech inputs produced text decoded without VAD, "
          f"{gated}/{len(trials)} behind the speech VAD")
    print(f"RSS max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

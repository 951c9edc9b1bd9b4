"""Grammar rescoring of closed answers (menu, yes/no) with Whisper: free decode alone vs free decode + rescoring.

Human Mexican Spanish speaker (Debian asterisk-core-sounds-es-wav), 8 kHz through G.711 μ-law:
- answers: the ten digits said alone at a menu whose options are named by number (`MENU`: the ten option numbers
  and four words, the hardest set), and "sí"/"no" at a yes/no prompt. There is no "sí" recording: the two "sí"
  are the first word cut from "Si esta es la persona..." (dir-instr, 220 ms) and "Si usted desea..."
  (demo-instruct, 280 ms; cut points from Whisper's alignment, 20 ms fade); the "no" are vm-no and the first
  word of "No hay mensajes" / "No está libre". Each with the VAD opening late (0/50/100/150 ms of the word's
  onset removed), 0-300 ms of lead silence, 450 ms tail (the closed endpoint silence), μ-law, noise 20/10 dB.
- non-answers, which must stay non-answers: every short human phrase of the package (1-3 words, <= 1.8 s,
  none that is an answer), number words that are no option ("trece", "trescientos", "doscientos", "once"...),
  at both prompts; noise (white, pink, babble) at -30/-20 dBFS; and `babble` alone (other voices: four human
  phrases summed, 40 seeds x 2 levels of -30 to -15 dBFS) at the menu, yes/no and a one-key prompt.
Counted per clip: accepted-correct (the expected answer), accepted-wrong (another valid answer, or any valid
answer for a non-answer: a false accept), rejected (no valid answer: the portal asks again). Extra time: the
rescoring's own time, over the clips where it ran (it runs only when the free decode gave no valid answer).
"Before the coverage rule" (`WhisperOptions.cover_no_speech`): what the turn got before an answer read from more
than the answer, or from a rejected loop, at a high no-speech probability was dropped (exact: that answer was the
turn's, and a valid free answer is never rescored).

Usage: .venv/bin/python bench/asr_closed.py [--cuts 0,50,100,150] [--leads 0,150,300] [--channels ...]
       [--groups digits,yes_no,other,noise,babble] [--babble-seeds 40] [--sweep] [--show]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ivr.speech.answers import closed_answer
from ivr.speech.expect import Expect
from ivr.speech.whisper import Rescore, WhisperDecoder, WhisperModel, WhisperOptions, rescore_accepts
from testkit import human_speech as hs
from voice_models.whisper import locate_whisper

MENU = Expect(kind="menu", phrases=("turismo", "información de trámites", "estado de mi trámite", "asesor"))
YES_NO = Expect(kind="yes_no", phrases=("sí", "no"))
ONE_KEY = Expect(kind="digits", max_digits=1)
NAMES = ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")
CHANNELS = {"mulaw": {}, "noise20": {"snr_db": 20.0}, "noise10": {"snr_db": 10.0}}
# (recording, ms kept from its trimmed start or None for all of it, the answer)
YES_NO_WORDS = (("dir-instr", 220, "sí"), ("demo-instruct", 280, "sí"), ("vm-no", None, "no"),
                ("vm-nomore", 220, "no"), ("vm-isunavail", 240, "no"))
NOT_OPTIONS = ("digits/10", "digits/11", "digits/12", "digits/13", "digits/14", "digits/15", "digits/16",
               "digits/20", "digits/200", "digits/300", "digits/h-3", "digits/h-2")
TAIL_MS = 450


@dataclass(frozen=True, slots=True)
class Clip:
    group: str
    label: str
    expect: Expect
    answer: str | None        # None: not an answer, any valid answer is a false accept
    pcm: bytes


def head(name: str, keep_ms: int | None, fade_ms: int = 20) -> bytes:
    """The recording trimmed, and cut to its first `keep_ms` (a word from the start of a phrase) with a fade."""
    pcm = hs.trim(hs.recording(name).pcm())
    if keep_ms is None:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2")[: hs.RATE * keep_ms // 1000].astype(np.float32)
    n = hs.RATE * fade_ms // 1000
    x[-n:] *= np.linspace(1.0, 0.0, n)
    return x.astype("<i2").tobytes()


def late(pcm: bytes, cut_ms: int) -> bytes:
    return pcm[hs.RATE * cut_ms // 1000 * 2:]


def short_phrases() -> list[str]:
    """Recordings of 1-3 words, <= 1.8 s, that are no answer to either prompt (fixed by rule)."""
    out = []
    for r in hs.recordings().values():
        if r.name.startswith(("digits/", "letters/", "phonetic/", "silence/")) or not 1 <= r.words <= 3:
            continue
        if any(c.isdigit() for c in r.text) or r.text.startswith("("):
            continue
        if len(hs.trim(r.pcm())) / (2 * hs.RATE) > 1.8:
            continue
        if closed_answer(r.text, MENU) is not None or closed_answer(r.text, YES_NO) is not None:
            continue
        out.append(r.name)
    return out


def clips(groups: list[str], cuts: list[int], leads: list[int], channels: list[str],
          babble_seeds: int = 40) -> Iterator[Clip]:
    seed = 0
    for group in groups:
        if group in ("digits", "yes_no"):
            words = [(f"digits/{d}", None, NAMES[d]) for d in range(10)] if group == "digits" else YES_NO_WORDS
            expect = MENU if group == "digits" else YES_NO
            for name, keep, answer in words:
                for cut in cuts:
                    for lead in leads:
                        for ch in channels:
                            seed += 1
                            pcm = hs.channel(hs.pad(late(head(name, keep), cut), lead, TAIL_MS), seed=seed,
                                             **CHANNELS[ch])  # type: ignore[arg-type]
                            yield Clip(group, f"{answer} cut{cut} lead{lead} {ch}", expect, answer, pcm)
        elif group in ("other", "other-a", "other-b"):
            # other-a / other-b: every other phrase (the thresholds were chosen on other-a; other-b is held out)
            names = [*short_phrases(), *NOT_OPTIONS]
            for i, name in enumerate(names):
                half = "other-a" if i % 2 == 0 else "other-b"
                if group not in ("other", half):
                    continue
                for ch in [c for c in channels if c in ("mulaw", "noise10")] or channels[:1]:
                    seed += 1
                    pcm = hs.channel(hs.pad(hs.trim(hs.recording(name).pcm()), 300, TAIL_MS), seed=seed,
                                     **CHANNELS[ch])  # type: ignore[arg-type]
                    for expect in (MENU, YES_NO):
                        yield Clip(half, f"{name} {ch} {expect.kind}", expect, None, pcm)
        elif group == "noise":
            for kind in ("white", "pink", "babble"):
                for level in (-30.0, -20.0):
                    seed += 1
                    pcm = hs.mulaw_channel(hs.noise_pcm(1200, level, kind=kind, seed=seed))
                    for expect in (MENU, YES_NO):
                        yield Clip(group, f"{kind} {level:.0f}dB {expect.kind}", expect, None, pcm)
        elif group == "babble":
            # other voices alone (four of the speaker's phrases summed, testkit.human_speech._babble), 1.2 s at
            # -30 to -15 dBFS, at the menu, yes/no and a one-key prompt: all reach the decoder past a speech VAD
            for b_seed in range(1, babble_seeds + 1):
                for level in (-30.0, -25.0, -20.0, -15.0)[b_seed % 2::2]:
                    pcm = hs.mulaw_channel(hs.noise_pcm(1200, level, kind="babble", seed=b_seed))
                    for expect in (MENU, YES_NO, ONE_KEY):
                        yield Clip(group, f"babble s{b_seed} {level:.0f}dB {expect.kind}", expect, None, pcm)


def verdict(text: str, clip: Clip) -> str:
    """correct / wrong / rejected for what the dialogue would receive."""
    answer = closed_answer(text, clip.expect) if text else None
    if answer is None:
        return "rejected"
    return "correct" if answer == clip.answer else "wrong"


def decide(rescored: Rescore, min_logprob: float, margin: float, opt: WhisperOptions) -> str | None:
    """The answer a single-tier rule (min log-prob, margin) would take, with the clear-lead tier of `opt`."""
    one_tier = replace(opt, rescore_min_logprob=min_logprob, rescore_margin=margin)
    return rescored.best if rescore_accepts(rescored.logprob, rescored.margin, one_tier) else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="digits,yes_no,other,noise,babble")
    ap.add_argument("--babble-seeds", type=int, default=40, help="babble clips: seeds, two levels each")
    ap.add_argument("--cuts", default="0,50,100,150", help="ms of the word's onset removed (VAD opening late)")
    ap.add_argument("--leads", default="0,150,300", help="ms of silence before the word")
    ap.add_argument("--channels", default=",".join(CHANNELS))
    ap.add_argument("--min-logprob", type=float, default=None)
    ap.add_argument("--margin", type=float, default=None)
    ap.add_argument("--one-tier", action="store_true", help="no clear-lead tier (min log-prob and margin only)")
    ap.add_argument("--sweep", action="store_true", help="also print the counts for a grid of threshold/margin")
    ap.add_argument("--show", action="store_true", help="print every clip rescoring changed or got wrong")
    ap.add_argument("--dump", help="write every rescoring (clip, expected, best, log-prob, margin) to this JSON file")
    args = ap.parse_args()
    opt = replace(WhisperOptions(), max_decode_s=60.0)
    if args.min_logprob is not None:
        opt = replace(opt, rescore_min_logprob=args.min_logprob)
    if args.margin is not None:
        opt = replace(opt, rescore_margin=args.margin)
    if args.one_tier:
        opt = replace(opt, rescore_clear_margin=float("inf"))
    model = WhisperModel(locate_whisper(), options=opt)
    print(f"whisper base int8 1 thread; rescoring taken at log-prob >= {opt.rescore_min_logprob} and margin >= "
          f"{opt.rescore_margin}, or log-prob >= {opt.rescore_clear_logprob} and margin >= "
          f"{opt.rescore_clear_margin}; max audio {opt.rescore_max_audio_s}s; load {os.getloadavg()[0]:.2f}")
    groups = args.groups.split(",")
    rows: dict[str, dict[str, list[int]]] = {}
    extra: dict[str, list[float]] = {}
    free_s: dict[str, list[float]] = {}
    runs: list[tuple[str, Clip, Rescore]] = []
    counted: dict[str, int] = {}
    for clip in clips(groups, [int(v) for v in args.cuts.split(",")], [int(v) for v in args.leads.split(",")],
                      args.channels.split(","), args.babble_seeds):
        dec = WhisperDecoder(model, hs.RATE, options=opt)
        dec.set_expect(clip.expect)
        dec.accept(clip.pcm)
        t0 = time.perf_counter()
        text = dec.final()[0]
        took = time.perf_counter() - t0
        free, with_rescore = verdict(dec.free_text, clip), verdict(text, clip)
        # before the coverage rule (WhisperOptions.cover_no_speech) the dropped answer was the turn's answer, and
        # a valid free answer is never rescored: so the "before" verdict is exact
        before = verdict(dec.uncovered, clip) if dec.uncovered else with_rescore
        row = rows.setdefault(clip.group, {"free": [0, 0, 0], "rescored": [0, 0, 0], "before": [0, 0, 0]})
        row["free"][("correct", "wrong", "rejected").index(free)] += 1
        row["rescored"][("correct", "wrong", "rejected").index(with_rescore)] += 1
        row["before"][("correct", "wrong", "rejected").index(before)] += 1
        counted[clip.group] = counted.get(clip.group, 0) + 1
        if dec.rescored is not None:
            extra.setdefault(clip.group, []).append(dec.rescored.decode_s)
            runs.append((free, clip, dec.rescored))
        free_s.setdefault(clip.group, []).append(took - (dec.rescored.decode_s if dec.rescored else 0.0))
        if args.show and dec.uncovered:
            print(f"  {clip.group:7} {clip.label:40} not covering its reading: {dec.uncovered!r} from "
                  f"{(dec.last.raw if dec.last else '')!r} -> {text!r:10} {with_rescore}", flush=True)
        if args.show and (free != with_rescore or with_rescore == "wrong"):
            rs = dec.rescored
            detail = f"best {rs.best} {rs.logprob:.2f} margin {rs.margin:.2f}" if rs else ""
            print(f"  {clip.group:7} {clip.label:40} free {dec.free_text!r:14} ({(dec.last.raw if dec.last else '')!r}) "
                  f"-> {text!r:10} {with_rescore:8} {detail}", flush=True)
    print()
    print("| set | clips | free: correct / wrong / rejected | with rescoring: correct / wrong / rejected | "
          "before the coverage rule | rescoring ran | extra time p50 / max | free decode p50 |")
    print("|---|---|---|---|---|---|---|---|")
    for group, row in rows.items():
        f, r, b = row["free"], row["rescored"], row["before"]
        ex = extra.get(group, [])
        ex_note = f"{statistics.median(ex) * 1000:.0f} / {max(ex) * 1000:.0f} ms" if ex else "-"
        print(f"| {group} | {counted[group]} | {f[0]} / {f[1]} / {f[2]} | {r[0]} / {r[1]} / {r[2]} | "
              f"{b[0]} / {b[1]} / {b[2]} | {len(ex)} | "
              f"{ex_note} | {statistics.median(free_s[group]) * 1000:.0f} ms |")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.dump:
        Path(args.dump).write_text(json.dumps([
            {"group": clip.group, "label": clip.label, "answer": clip.answer, "free": free, "best": run.best,
             "logprob": run.logprob, "margin": run.margin if run.margin != float("inf") else 99.0}
            for free, clip, run in runs], ensure_ascii=False, indent=0), encoding="utf-8")
    if args.sweep:
        print("\nsweep over the rescored clips (answers correct / wrong, non-answers false accepts), the first tier "
              "varied, the clear-lead tier as above:")
        for min_lp in (-5.0, -6.0, -7.0, -8.0, -9.0):
            cells = []
            for margin in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
                ok = bad = fa = 0
                for _, clip, run in runs:
                    taken = decide(run, min_lp, margin, opt)
                    if taken is None:
                        continue
                    if clip.answer is None:
                        fa += 1
                    elif taken == clip.answer:
                        ok += 1
                    else:
                        bad += 1
                cells.append(f"m{margin}: {ok}/{bad}/{fa}")
            print(f"  min {min_lp}: " + "  ".join(cells))


if __name__ == "__main__":
    main()

"""Speech VAD against the energy VAD on human Spanish recordings (8 kHz μ-law) mixed with noise.

Per detector and condition: speech/non-speech frame accuracy (reference: frames of the clean recording within
35 dB of its loudest frame, pauses under 200 ms filled), endpoint error (|detected - reference end of speech| in
ms, through the stream's turn tracker), false barge-ins per minute of noise alone (utterances reaching the
no-words barge-in time of 600 ms), CPU per 20 ms frame. Usage: .venv/bin/python bench/vad.py [--n 30]

Candidates measured beside them when installed (not project dependencies; `pip install webrtcvad-wheels ten-vad`,
ten-vad's library needs Debian's libc++1): WebRTC VAD (8 kHz 20 ms frames, modes 2 and 3) and TEN VAD (16 kHz,
two 10 ms hops per frame, threshold 0.5). Like Silero they get the -50 dBFS energy floor (frames under it are
unvoiced without running the model), so the comparison is of the models.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.signal import firwin, lfilter

from ivr.speech.audio_ops import energy_db
from ivr.speech.frames import FRAME_MS, frame_bytes
from ivr.speech.speech_vad import EnergyVoicing, FrameVoicing, SileroVoicing, shared_silero
from ivr.speech.vad import CallerTurnTracker
from testkit import human_speech as hs

FB = frame_bytes(hs.RATE)
BARGE_NO_WORDS_MS = 600
LEAD_MS, TAIL_MS = 600, 1200


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i:i + FB] for i in range(0, len(pcm) - FB + 1, FB)]


def reference(clean: bytes) -> np.ndarray:
    e = np.array([energy_db(f) for f in frames(clean)])
    ref = e >= e.max() - 35.0
    idx = np.flatnonzero(ref)
    if idx.size:
        for a, b in zip(idx[:-1], idx[1:], strict=True):
            if 1 < b - a <= 200 // FRAME_MS:
                ref[a:b] = True
    return ref


FLOOR_DB = -50.0
_HALF_BAND = (firwin(31, 0.5) * 2).astype(np.float32)      # 8 -> 16 kHz, as ivr.speech.speech_vad does


class WebRtcVoicing:
    """WebRTC's GMM VAD on the 8 kHz frame as it comes."""

    speech_detector = True

    def __init__(self, mode: int) -> None:
        import webrtcvad
        self.name = f"webrtc{mode}"
        self._mode = mode
        self._vad = webrtcvad.Vad(mode)

    def voiced(self, pcm: bytes, energy_db: float) -> bool:
        return energy_db >= FLOOR_DB and bool(self._vad.is_speech(pcm, hs.RATE))

    def reset(self) -> None:
        import webrtcvad
        self._vad = webrtcvad.Vad(self._mode)


class TenVoicing:
    """TEN VAD at 16 kHz: the frame upsampled, two 160-sample hops; voiced when either hop's flag is set."""

    name = "ten"
    speech_detector = True

    def __init__(self) -> None:
        self.reset()

    def voiced(self, pcm: bytes, energy_db: float) -> bool:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        up = np.zeros(x.size * 2, dtype=np.float32)
        up[::2] = x
        y, self._zi = lfilter(_HALF_BAND, 1.0, up, zi=self._zi)
        y16 = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        flags = [self._vad.process(np.ascontiguousarray(y16[i:i + 160]))[1] for i in (0, 160)]
        return energy_db >= FLOOR_DB and any(f == 1 for f in flags)

    def reset(self) -> None:
        import ten_vad
        self._vad = ten_vad.TenVad(160, 0.5)
        self._zi = np.zeros(len(_HALF_BAND) - 1, dtype=np.float32)


def detectors() -> dict[str, FrameVoicing]:
    model = shared_silero()
    out: dict[str, FrameVoicing] = {"energy": EnergyVoicing(-40.0),
                                    "silero": SileroVoicing(model, hs.RATE, floor_db=FLOOR_DB)}
    for name, make in (("webrtc2", lambda: WebRtcVoicing(2)), ("webrtc3", lambda: WebRtcVoicing(3)),
                       ("ten", TenVoicing)):
        try:
            out[name] = make()
        except (ImportError, OSError) as exc:        # not installed, or ten-vad's libc++ missing
            print(f"{name}: not measured ({type(exc).__name__}: {exc})")
    return out


def run(det: FrameVoicing, pcm: bytes) -> tuple[np.ndarray, float, int]:
    det.reset()
    out = []
    c0 = time.process_time()
    fs = frames(pcm)
    for f in fs:
        out.append(det.voiced(f, energy_db(f)))
    return np.array(out), time.process_time() - c0, len(fs)


def endpoint_ms(voiced: np.ndarray) -> float | None:
    t = CallerTurnTracker(-40.0)
    for i, v in enumerate(voiced):
        t.push_voiced(bool(v), (i + 1) * FRAME_MS / 1000)
    return None if t.last_voiced_at is None else t.last_voiced_at * 1000


def false_barge_ins(voiced: np.ndarray) -> int:
    t = CallerTurnTracker(-40.0)
    n, counted = 0, False
    for i, v in enumerate(voiced):
        t.push_voiced(bool(v), (i + 1) * FRAME_MS / 1000)
        if not t.in_utterance:
            counted = False
        elif t.voiced_ms >= BARGE_NO_WORDS_MS and not counted:
            n, counted = n + 1, True
            t.reset()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    phrases = hs.phrase_subset(args.n)
    dets = detectors()
    conditions: dict[str, dict[str, object]] = {
        "mulaw": {}, "white20": {"snr_db": 20.0}, "white10": {"snr_db": 10.0},
        "pink10": {"snr_db": 10.0, "noise": "pink"}, "babble10": {"snr_db": 10.0, "noise": "babble"}}
    print(f"{len(phrases)} human phrases, lead {LEAD_MS} ms, tail {TAIL_MS} ms")
    for cond, kw in conditions.items():
        for name, det in dets.items():
            acc, n_frames, errs, cpu = 0, 0, [], 0.0
            for r in phrases:
                clean = hs.pad(r.pcm(), LEAD_MS, TAIL_MS)
                ref = reference(clean)
                voiced, spent, n = run(det, hs.channel(clean, **kw))  # type: ignore[arg-type]
                ref = ref[:n]
                acc += int((voiced == ref).sum())
                n_frames += n
                cpu += spent
                end = endpoint_ms(voiced)
                ref_end = (np.flatnonzero(ref)[-1] + 1) * FRAME_MS
                errs.append(abs(end - ref_end) if end is not None else 2000.0)
            print(f"{cond:9} {name:7} frame acc {acc / n_frames:.3f}  endpoint err p50 {np.median(errs):4.0f} ms "
                  f"p90 {np.percentile(errs, 90):4.0f} ms  CPU/frame {cpu / n_frames * 1e6:5.0f} us", flush=True)
    minutes = 0.0
    fb = {k: 0 for k in dets}
    for kind in ("white", "pink", "babble"):
        for lvl in (-45.0, -35.0, -25.0):
            noise = hs.mulaw_channel(hs.noise_pcm(20000, lvl, kind=kind, seed=3))
            minutes += 20 / 60
            for name, det in dets.items():
                fb[name] += false_barge_ins(run(det, noise)[0])
    print("false barge-ins per minute of noise alone (white/pink/babble at -45/-35/-25 dBFS): "
          + ", ".join(f"{k} {v / minutes:.1f}" for k, v in fb.items()))


if __name__ == "__main__":
    main()

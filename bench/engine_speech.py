"""Engine-core speech figures on this machine: VAD cost per frame, Vosk real-time factor (free speech vs
phrase grammar vs noise, one stream and parallel streams), TTS render and cache-hit times, and the RSS of a
process holding the Vosk model with 1 and 4 recognizers.

    .venv/bin/python bench/engine_speech.py [--model ko-test] [--streams 4]

Speech is espeak-ng Korean resampled to 8 kHz (the test model is Korean); the production Spanish model is a
small lookahead model of the same family, so its figures are comparable but should be re-measured with it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.call.session import SessionPhrases  # noqa: E402
from ivr.dialogue.menu import load_menu  # noqa: E402
from ivr.speech.audio_ops import energy_db  # noqa: E402
from ivr.speech.endpointing import EndpointConfig  # noqa: E402
from ivr.speech.recognizer import StreamConfig, VoskRecognizer  # noqa: E402
from ivr.speech.tts import EspeakSynthesizer  # noqa: E402
from ivr.speech.vad import CallerTurnTracker  # noqa: E402
from testkit.fakes import frames_of  # noqa: E402
from testkit.sounds import noise, silence, speech  # noqa: E402
from voice_models import locate  # noqa: E402

RATE = 8000
SENTENCES = ["안녕하세요 만나서 반갑습니다", "상담원 연결해 주세요", "오늘 날씨가 정말 좋네요",
             "서류 발급 상태를 알고 싶습니다", "감사합니다 좋은 하루 되세요"]
GRAMMAR = ["안녕하세요", "감사합니다", "상담원", "관광", "서류", "상태", "네", "아니요", "[unk]"]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def bench_vad(n_frames: int = 50_000) -> None:
    pcm = (speech(SENTENCES[0]) + silence(500)) * 10
    frames = frames_of(pcm)
    tracker = CallerTurnTracker(-40.0)
    t0 = time.perf_counter()
    for i in range(n_frames):
        f = frames[i % len(frames)]
        tracker.push(energy_db(f.pcm), f.timestamp + i)
    per = (time.perf_counter() - t0) / n_frames
    print(f"VAD (energy + state machine): {per * 1e6:.1f} us per 20 ms frame "
          f"({per * 50 * 100:.3f} % of one core per call)")


async def bench_stream_gating(model: object, pool: ThreadPoolExecutor) -> None:
    cfg = StreamConfig(-40.0, 300, EndpointConfig(900, 450))
    rec = VoskRecognizer(model, pool, cfg)
    stream = rec.stream("bench", RATE)
    frames = frames_of(silence(20_000))
    t0 = time.perf_counter()
    for f in frames:
        stream.push_frame(f)
    per = (time.perf_counter() - t0) / len(frames)
    await stream.aclose()
    print(f"RecognizeStream.push_frame on silence (VAD + pre-roll, no decoding): {per * 1e6:.1f} us per frame; "
          f"frames decoded: {stream.frames_decoded}/{len(frames)}")


def decode_rtf(model: object, pcm: bytes, grammar: list[str] | None) -> float:
    import vosk
    rec = vosk.KaldiRecognizer(model, float(RATE))
    if grammar:
        rec.SetGrammar(json.dumps(grammar, ensure_ascii=False))
    chunk = RATE * 2 // 10          # 100 ms, as the stream batches it
    t0 = time.perf_counter()
    for i in range(0, len(pcm), chunk):
        rec.AcceptWaveform(pcm[i:i + chunk])
    rec.FinalResult()
    return (time.perf_counter() - t0) / (len(pcm) / (2 * RATE))


def bench_rtf(model: object, streams: int) -> None:
    free = b"".join(speech(s) + silence(200) for s in SENTENCES)
    audio_s = len(free) / (2 * RATE)
    rows = []
    for label, pcm, grammar in (("free speech", free, None), ("phrase grammar", free, GRAMMAR),
                                ("noise -25 dBFS, free", noise(int(audio_s * 1000), -25.0), None)):
        runs = [decode_rtf(model, pcm, grammar) for _ in range(3)]
        rtf = statistics.median(runs)
        rows.append((label, rtf))
        print(f"Vosk RTF, one stream, {label}: {rtf:.3f} (= {1 / rtf:.1f}x real time) over {audio_s:.1f} s audio")
    for label, grammar in (("free speech", None), ("phrase grammar", GRAMMAR)):
        with ThreadPoolExecutor(max_workers=streams) as ex:
            t0 = time.perf_counter()
            per_stream = list(ex.map(lambda _i, g=grammar: decode_rtf(model, free, g), range(streams)))
            wall = time.perf_counter() - t0
        print(f"Vosk, {streams} streams in parallel ({psutil.cpu_count()} cores), {label}: per-stream RTF "
              f"{statistics.median(per_stream):.3f}; aggregate {streams * audio_s / wall:.1f}x real time")


async def bench_tts() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        synth = EspeakSynthesizer(voice="roa/es-419", rate=165, sample_rate=RATE, cache_dir=Path(tmp))
        await synth.start()
        texts = [*load_menu().all_texts(), *SessionPhrases().all()]
        t0 = time.perf_counter()
        await synth.prerender(texts)
        total = time.perf_counter() - t0
        renders = sorted(synth.stats.per_text.items(), key=lambda kv: len(kv[0]))
        audio_s = 0.0
        hit_times = []
        for text, _ in renders:
            t1 = time.perf_counter()
            pcm = await synth.synthesize(text)
            hit_times.append(time.perf_counter() - t1)
            audio_s += len(pcm) / (2 * RATE)
        render_ms = [v * 1000 for _, v in renders]
        print(f"TTS render (pyttsx3/espeak-ng + resample to 8 kHz + atomic cache write): {len(renders)} prompts, "
              f"{audio_s:.1f} s of audio in {total:.2f} s; per prompt median {statistics.median(render_ms):.1f} ms, "
              f"max {max(render_ms):.1f} ms (shortest {render_ms[0]:.1f} ms, longest text {render_ms[-1]:.1f} ms)")
        print(f"TTS cache hit: median {statistics.median(hit_times) * 1e6:.0f} us, max {max(hit_times) * 1e6:.0f} us")
        await synth.close()


def bench_recognizer_setup(model: object) -> None:
    import vosk
    grammar = json.dumps(GRAMMAR, ensure_ascii=False)
    new, setg = [], []
    for _ in range(7):
        t0 = time.perf_counter()
        rec = vosk.KaldiRecognizer(model, float(RATE))
        new.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rec.SetGrammar(grammar)
        setg.append(time.perf_counter() - t0)
    print(f"Vosk per-call setup: new KaldiRecognizer {statistics.median(new) * 1000:.0f} ms, "
          f"SetGrammar {statistics.median(setg) * 1000:.2f} ms (why a call keeps a free and a grammar recognizer)")


def bench_rss(model_key: str) -> None:
    import vosk
    vosk.SetLogLevel(-2)
    base = rss_mb()
    t0 = time.perf_counter()
    model = vosk.Model(str(locate(model_key)))
    load_s = time.perf_counter() - t0
    loaded = rss_mb()
    pcm = speech(SENTENCES[0]) + silence(300)
    recs = []
    figures = {}
    for n in (1, 2, 4):
        while len(recs) < n:
            r = vosk.KaldiRecognizer(model, float(RATE))
            for i in range(0, len(pcm), 1600):
                r.AcceptWaveform(pcm[i:i + 1600])
            r.PartialResult()
            recs.append(r)
        figures[n] = rss_mb()
    g = vosk.KaldiRecognizer(model, float(RATE))
    g.SetGrammar(json.dumps(GRAMMAR, ensure_ascii=False))
    g.AcceptWaveform(pcm)
    with_grammar = rss_mb()
    print(f"RSS: interpreter + imports {base:.0f} MB; model {model_key} loaded in {load_s:.1f} s -> {loaded:.0f} MB; "
          f"with 1 recognizer {figures[1]:.0f} MB, 2 -> {figures[2]:.0f} MB, 4 -> {figures[4]:.0f} MB "
          f"(+{(figures[4] - figures[1]) / 3:.0f} MB per extra recognizer); +1 grammar recognizer {with_grammar:.0f} MB")


async def bench_engine_rss(model_key: str, calls: int) -> None:
    """RSS of a real Engine (shared model, TTS, menu) with 0, 1 and `calls` live calls that have spoken."""
    from foundation.config import Settings
    from ivr.dialogue.menu import menu_dialogue_factory
    from ivr.engine import Engine, NullRecorder
    from ivr.metrics import EngineMetrics
    from testkit.fakes import FakeLeg
    base = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        settings = base.model_copy(update={
            "asr": base.asr.model_copy(update={"model": model_key}),
            "tts": base.tts.model_copy(update={"cache_dir": Path(tmp)})})
        before = rss_mb()
        engine = await Engine.create(settings, EngineMetrics(), recorder=NullRecorder(),
                                     dialogue_factory=menu_dialogue_factory(load_menu()))
        figures = {0: rss_mb()}
        legs, tasks = [], []
        for n in range(1, calls + 1):
            leg = FakeLeg(f"bench-{n}")
            legs.append(leg)
            tasks.append(asyncio.create_task(engine.handle_call(leg)))
            await asyncio.sleep(0.3)
            # Speech over the greeting: decoded by the grammar recognizer (menu), then free speech is not needed.
            await leg.say(speech(SENTENCES[n % len(SENTENCES)]) + silence(800))
            if n in (1, calls):
                await asyncio.sleep(1.0)
                figures[n] = rss_mb()
        for leg in legs:
            leg.hang_up()
        await asyncio.gather(*tasks)
        await engine.close()
    print(f"RSS of a real Engine ({model_key}): before {before:.0f} MB; after create (model + TTS + prompts) "
          f"{figures[0]:.0f} MB; 1 live call {figures[1]:.0f} MB; {calls} live calls {figures[calls]:.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="ko-test")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--engine-rss", action="store_true",
                    help="only measure the RSS of a real Engine with 1 and 4 live calls (run in a fresh process)")
    args = ap.parse_args()
    if args.engine_rss:
        asyncio.run(bench_engine_rss(args.model, 4))
        return 0
    bench_rss(args.model)          # first, so the figures are those of a fresh process
    bench_vad()
    import vosk
    model = vosk.Model(str(locate(args.model)))
    with ThreadPoolExecutor(max_workers=2) as pool:
        asyncio.run(bench_stream_gating(model, pool))
    bench_recognizer_setup(model)
    bench_rtf(model, args.streams)
    asyncio.run(bench_tts())
    return 0


if __name__ == "__main__":
    sys.exit(main())

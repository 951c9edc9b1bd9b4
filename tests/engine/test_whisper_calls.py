"""Calls through the Engine with Whisper base and the Silero speech VAD, the YAML menu as dialogue (no Rasa), and a
human Spanish caller (Asterisk es_MX recordings through 8 kHz μ-law) on an in-memory leg: the same session, stream,
VAD, endpointer, decoder and answer mapping a SIP call uses (the SIP and Rasa version is
tests/dialogs/test_voice_calls.py)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from foundation.config import Settings
from ivr.dialogue.menu import load_menu, menu_dialogue_factory
from ivr.engine import Engine
from ivr.metrics import EngineMetrics
from ivr.speech.whisper import WhisperRecognizer
from testkit import human_speech as hs
from testkit.fakes import FakeLeg, FakeRecorder
from voice_models import ModelError
from voice_models.whisper import locate_whisper


def _whisper_missing() -> str | None:
    try:
        locate_whisper()
    except ModelError as exc:
        return f"Whisper base not placed ({exc}): run `veratur models fetch --model whisper-base`"
    return hs.missing_reason()


pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(_whisper_missing() is not None, reason=_whisper_missing() or "")]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    base = Settings()
    settings = base.model_copy(update={
        "asr": base.asr.model_copy(update={"engine": "whisper", "vad": "silero"}),
        "tts": base.tts.model_copy(update={"cache_dir": tmp_path / "tts"}),
    })
    eng = await Engine.create(settings, EngineMetrics(), recorder=FakeRecorder(),
                              dialogue_factory=menu_dialogue_factory(load_menu()))
    assert isinstance(eng.recognizer, WhisperRecognizer)
    yield eng
    await eng.close()


async def wait_for(predicate: Any, limit_s: float = 30.0) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 - polls state the engine exposes no event for
            await asyncio.sleep(0.02)


async def test_tres_over_the_greeting_stops_it_and_a_spoken_folio_is_read_back(engine: Engine) -> None:
    recorder = engine.recorder
    assert isinstance(recorder, FakeRecorder)
    leg = FakeLeg("whisper-barge")
    recorder.leg = leg
    task = asyncio.create_task(engine.handle_call(leg))
    await wait_for(lambda: leg.sent_ms >= 1000)
    session = engine.sessions["whisper-barge"]
    greeting = session.prompts_played[0]
    speech_start = time.monotonic()
    # "tres" where the menu says "marque 3": one word, ~0.5 s, over the greeting
    saying = asyncio.create_task(leg.say(hs.channel(hs.pad(hs.recording("digits/3").pcm(), 0, 900))))
    await wait_for(lambda: greeting.done)
    stopped_after_ms = (time.monotonic() - speech_start) * 1000
    assert greeting.interrupted
    # the speech VAD stops it on speech (~300 ms voiced), before Whisper has decoded anything
    assert stopped_after_ms <= 1000, stopped_after_ms
    await saying
    await wait_for(lambda: len(session.prompts_played) >= 2)
    assert "folio" in session.prompts_played[1].text
    await wait_for(lambda: session.prompts_played[1].done)
    folio = hs.folios(1)[0]
    await leg.say(hs.channel(hs.splice_digits(folio, lead_ms=200, tail_ms=1200)))
    await wait_for(lambda: len(session.prompts_played) >= 3)
    caller = [(t.text, t.intent) for t in recorder.turns if t.call_id == "whisper-barge" and t.speaker == "caller"]
    assert caller[:2] == [("tres", "tramite_status"), (folio, "tramite_status_folio")], caller
    assert " ".join(folio) in session.prompts_played[2].text
    leg.hang_up("bye")
    await asyncio.wait_for(task, 30)


async def test_a_folio_read_in_two_groups_is_one_answer_after_a_spoken_menu_answer(engine: Engine) -> None:
    # the shipped turns.endpoint_silence_ms_digits: a folio read "4 digits ... 800 ms ... 4 digits" is one turn,
    # and the menu answer "tres" before it (a menu states no digit count) does not wait for a next group
    assert engine.settings.turns.endpoint_silence_ms_digits > engine.settings.turns.endpoint_silence_ms_closed
    recorder = engine.recorder
    assert isinstance(recorder, FakeRecorder)
    leg = FakeLeg("whisper-grouped")
    recorder.leg = leg
    task = asyncio.create_task(engine.handle_call(leg))
    await wait_for(lambda: leg.sent_ms >= 500)
    session = engine.sessions["whisper-grouped"]
    await wait_for(lambda: session.prompts_played[0].done, 60)
    await leg.say(hs.channel(hs.pad(hs.recording("digits/3").pcm(), 300, 900)))
    await wait_for(lambda: len(session.prompts_played) >= 2)
    assert "folio" in session.prompts_played[1].text
    await wait_for(lambda: session.prompts_played[1].done, 60)
    folio = hs.folios(3, seed=5)[2]      # the folio of tests/speech (a "7679 9988" loses one 9 of three: recognition)
    pause = b"\x00\x00" * (hs.RATE * 800 // 1000)
    grouped = hs.splice_digits(folio[:4], gap_ms=150) + pause + hs.splice_digits(folio[4:], gap_ms=150)
    await leg.say(hs.channel(hs.pad(grouped, 200, 1800)))
    await wait_for(lambda: len(session.prompts_played) >= 3)
    caller = [(t.text, t.intent) for t in recorder.turns if t.call_id == "whisper-grouped" and t.speaker == "caller"]
    assert caller == [("tres", "tramite_status"), (folio, "tramite_status_folio")], caller
    assert " ".join(folio) in session.prompts_played[2].text
    leg.hang_up("bye")
    await asyncio.wait_for(task, 30)


async def test_a_cough_and_line_noise_do_not_stop_the_greeting(engine: Engine) -> None:
    leg = FakeLeg("whisper-noise")
    task = asyncio.create_task(engine.handle_call(leg))
    await wait_for(lambda: leg.sent_ms >= 500)
    session = engine.sessions["whisper-noise"]
    greeting = session.prompts_played[0]
    # 2 s of loud pink noise over the greeting: far above the energy threshold, not speech
    await leg.say(hs.mulaw_channel(hs.noise_pcm(2000, -25.0, kind="pink", seed=4)))
    assert not greeting.done and not greeting.interrupted
    assert session.stats.barge_ins == 0
    leg.hang_up("bye")
    await asyncio.wait_for(task, 30)

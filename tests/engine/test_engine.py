"""The Engine as the worker uses it: real Vosk (Korean test model), real pyttsx3/espeak-ng TTS with prompts
prerendered, the YAML menu or a scripted dialogue, calls on in-memory legs."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from foundation.config import Settings
from ivr.dialogue.interface import DialogueReply, Expect
from ivr.dialogue.menu import load_menu, menu_dialogue_factory
from ivr.engine import Engine, NullRecorder
from ivr.metrics import EngineMetrics
from ivr.speech.audio_ops import energy_db
from ivr.speech.tts import EspeakSynthesizer
from testkit.fakes import FakeDialogue, FakeLeg, FakeRecorder
from testkit.sounds import silence, speech

pytestmark = pytest.mark.timeout(180)


def engine_settings(tmp_path: Path) -> Settings:
    base = Settings()
    return base.model_copy(update={
        "asr": base.asr.model_copy(update={"model": "ko-test"}),
        "tts": base.tts.model_copy(update={"cache_dir": tmp_path / "tts"}),
        "turns": base.turns.model_copy(update={"no_input_timeout_s": 1.0, "endpoint_silence_ms_free": 400}),
    })


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = await Engine.create(engine_settings(tmp_path), EngineMetrics(), recorder=FakeRecorder(),
                              dialogue_factory=menu_dialogue_factory(load_menu()))
    yield eng
    await eng.close()


async def wait_for(predicate: Any, limit_s: float = 20.0) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 - polls state the engine exposes no event for
            await asyncio.sleep(0.02)


async def test_create_prerenders_every_fixed_prompt(engine: Engine) -> None:
    synth = engine.synthesizer
    assert isinstance(synth, EspeakSynthesizer)
    rendered = synth.stats.renders
    assert rendered >= 10
    await synth.synthesize("Bienvenido al portal ciudadano del Gobierno de Veracruz.")
    assert synth.stats.renders == rendered and synth.stats.hits >= 1      # the first caller waits for nothing


async def test_menu_call_by_keypad_ends_in_a_transfer(engine: Engine) -> None:
    leg = FakeLeg("menu-call")
    recorder = engine.recorder
    assert isinstance(recorder, FakeRecorder)
    recorder.leg = leg
    task = asyncio.create_task(engine.handle_call(leg))
    await wait_for(lambda: leg.sent_ms >= 1500)
    assert energy_db(bytes(leg.sent[:16000])) > -35.0            # the greeting is audible
    leg.press("1")                                               # barges into the greeting: tourism
    await wait_for(lambda: len(recorder.turns) >= 3)
    leg.press("0")                                               # agent
    await asyncio.wait_for(task, 60)
    assert engine.dispositions["menu-call"] == "transferred"
    assert [t.text for t in recorder.turns if t.speaker == "caller"] == ["[DTMF 1]", "[DTMF 0]"]
    assert [t.intent for t in recorder.turns if t.speaker == "caller"] == ["tourism", "agent"]
    assert leg.transfers[0][0] == engine.settings.escalation.agent_queue_uri
    assert "menu-call" not in engine.sessions


async def test_spoken_answer_reaches_the_dialogue_through_real_vosk(tmp_path: Path) -> None:
    dialogues: list[FakeDialogue] = []

    def factory(_info: object) -> FakeDialogue:
        d = FakeDialogue(DialogueReply(texts=("Hola.",), expect=Expect(kind="free")),
                         [DialogueReply(texts=("Adiós.",), hangup=True)])
        dialogues.append(d)
        return d

    eng = await Engine.create(engine_settings(tmp_path), EngineMetrics(), dialogue_factory=factory,
                              recorder=NullRecorder())
    try:
        leg = FakeLeg("speech-call")
        task = asyncio.create_task(eng.handle_call(leg))
        await wait_for(lambda: eng.sessions.get("speech-call") is not None
                       and bool(eng.sessions["speech-call"].prompts_played)
                       and eng.sessions["speech-call"].prompts_played[0].done)
        await leg.say(speech("안녕하세요 만나서 반갑습니다") + silence(900))
        await asyncio.wait_for(task, 60)
        assert eng.dispositions["speech-call"] == "completed"
        turn = dialogues[0].turns[0]
        assert turn.event == "speech" and turn.text and turn.text.strip()
        latency = eng.metrics.registry.get_sample_value("veratur_turn_latency_seconds_count")
        assert latency == 1
    finally:
        await eng.close()


async def test_close_ends_live_calls_cleanly(tmp_path: Path) -> None:
    eng = await Engine.create(engine_settings(tmp_path), EngineMetrics(), recorder=NullRecorder(),
                              dialogue_factory=menu_dialogue_factory(load_menu()))
    leg = FakeLeg("live")
    task = asyncio.create_task(eng.handle_call(leg))
    await wait_for(lambda: leg.sent_ms > 200)
    await eng.close()
    assert task.done()
    assert eng.sessions == {}
    assert leg.hangup_calls == 1
    await eng.handle_call(FakeLeg("late"))                        # after close: refused with a hang-up


async def test_production_defaults_record_in_the_case_bridge_and_fall_back_to_the_menu(tmp_path: Path) -> None:
    """No dialogue or recorder given: the Rasa client (Rasa unreachable here -> menu fallback) and the case-bridge
    recorder on a migrated SQLite database with its outbox in data_dir."""
    db = f"sqlite:///{tmp_path / 'cases.db'}"
    await asyncio.to_thread(upgrade, db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]          # nothing listens: Rasa is "down"
    base = engine_settings(tmp_path)
    settings = base.model_copy(update={
        "data_dir": tmp_path / "var",
        "database": base.database.model_copy(update={"url": db}),
        "dialogue": base.dialogue.model_copy(update={"rasa_url": f"http://127.0.0.1:{dead_port}"}),
    })
    (tmp_path / "var").mkdir()
    metrics = EngineMetrics()
    eng = await Engine.create(settings, metrics, node="veratur-1/w0")
    try:
        leg = FakeLeg("prod-defaults")
        task = asyncio.create_task(eng.handle_call(leg))
        await wait_for(lambda: leg.sent_ms > 500)
        leg.press("2")                                   # trámite info from the fallback menu
        await wait_for(lambda: (metrics.registry.get_sample_value("veratur_dialogue_fallback_total") or 0) >= 2)
        leg.hang_up()
        await asyncio.wait_for(task, 30)
    finally:
        await eng.close()
    assert (tmp_path / "var" / "outbox-veratur-1-w0.sqlite").exists()
    service = CaseService.from_url(db)
    try:
        turns = await asyncio.to_thread(service.transcript, "prod-defaults")
    finally:
        service.close()
    said = [(t.speaker, t.text) for t in turns]
    assert ("caller", "[DTMF 2]") in said
    assert said[0][0] == "portal" and "Veracruz" in said[0][1]

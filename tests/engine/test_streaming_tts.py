"""Text-to-speech of a long reply starts playing after its first sentence is rendered: the sentence splitter,
the streaming prompt, and the session feeding it (a synthesizer that takes real time per sentence)."""
from __future__ import annotations

import asyncio
import time

import pytest

from ivr.call.prompt import Prompt
from ivr.call.session import CallSession
from ivr.dialogue.interface import DialogueReply, Expect
from ivr.engine import stream_config
from ivr.metrics import EngineMetrics
from ivr.speech.speech_vad import preload_silero
from ivr.speech.tts import split_sentences
from testkit.fakes import FakeDialogue, FakeLeg, FakeRecorder, ScriptedRecognizer, tone
from testkit.sounds import silence, speech
from tests.engine.test_session import make_settings

pytestmark = pytest.mark.timeout(60)

STATUS_REPLY = ("Su trámite con folio 1 8 8 5 7 3 2 8 es la licencia de funcionamiento. Estado: en revisión por la "
                "Dirección de Comercio. Lo revisa la Lic. Martínez, en la oficina de Av. Juárez número 12. Le "
                "faltan dos documentos: el comprobante de domicilio y la identificación oficial. Puede entregarlos "
                "en el portal o en cualquier oficina. ¿Desea algo más?")


@pytest.fixture(scope="module", autouse=True)
def _speech_vad_loaded() -> None:
    preload_silero()


def test_a_long_reply_splits_into_sentences_and_abbreviations_stay_whole() -> None:
    pieces = split_sentences(STATUS_REPLY)
    assert len(pieces) >= 4
    assert " ".join(pieces) == " ".join(STATUS_REPLY.split())         # nothing lost or reordered
    assert any("Lic. Martínez" in p for p in pieces) and any("Av. Juárez" in p for p in pieces)
    assert all(len(p) >= 30 for p in pieces)
    assert split_sentences("Adiós.") == ["Adiós."]
    assert split_sentences("Sí. Muy bien. Gracias por llamar.") == ["Sí. Muy bien. Gracias por llamar."]
    assert split_sentences("   ") == []


async def test_a_streaming_prompt_plays_what_arrives_and_ends_after_end_of_audio() -> None:
    leg = FakeLeg()
    prompt = Prompt(leg, tone(300), streaming=True)
    prompt.start()
    await asyncio.sleep(0.6)                    # the first part played out; the feeder waits for more
    assert not prompt.done
    prompt.append(tone(400, freq=660))
    prompt.end_of_audio()
    await asyncio.wait_for(prompt.wait_for_playout(), 3)
    assert prompt.played_ms == 700 and not prompt.interrupted
    assert bytes(leg.sent) == tone(300) + tone(400, freq=660)


async def test_an_interrupted_streaming_prompt_takes_no_more_audio() -> None:
    leg = FakeLeg()
    prompt = Prompt(leg, tone(2000), streaming=True)
    prompt.start()
    await asyncio.sleep(0.3)
    prompt.interrupt()
    prompt.append(tone(2000))
    await prompt.aclose()
    assert prompt.done and prompt.interrupted and leg.sent_ms <= 600


class SlowSynthesizer:
    """Renders each text as 1 s of tone, taking `render_s` of wall time (like espeak-ng on a busy core)."""

    def __init__(self, render_s: float) -> None:
        self.sample_rate = 8000
        self.render_s = render_s
        self.texts: list[str] = []
        self.prerendered: list[str] = []

    async def synthesize(self, text: str) -> bytes:
        await asyncio.sleep(self.render_s)
        self.texts.append(text)
        return tone(1000)

    def cached(self, text: str) -> bool:
        return text in self.prerendered

    async def prerender(self, texts: list[str]) -> None:
        self.prerendered.extend(texts)

    async def close(self) -> None:
        return None


async def _call(synth: SlowSynthesizer, greeting: str, texts: list[str]) -> tuple[CallSession, FakeLeg,
                                                                                 asyncio.Task[str]]:
    settings = make_settings(no_input_timeout_s=5.0)
    leg = FakeLeg()
    dialogue = FakeDialogue(DialogueReply(texts=(greeting,), expect=Expect(kind="free")),
                            [DialogueReply(texts=("Adiós.",), hangup=True)])
    session = CallSession(leg, settings=settings, dialogue=dialogue,
                          recognizer=ScriptedRecognizer(texts, stream_config(settings)), synthesizer=synth,
                          recorder=FakeRecorder(leg=leg), metrics=EngineMetrics())
    return session, leg, asyncio.create_task(session.run())


async def _first_prompt(session: CallSession) -> None:
    while not session.prompts_played:  # noqa: ASYNC110 - the session offers no event for it
        await asyncio.sleep(0.01)


async def test_a_long_reply_starts_after_its_first_sentence_and_plays_every_sentence() -> None:
    synth = SlowSynthesizer(render_s=0.25)
    pieces = split_sentences(STATUS_REPLY)
    started = time.monotonic()
    session, leg, task = await _call(synth, STATUS_REPLY, [])
    await _first_prompt(session)
    first_audio_s = session.prompts_played[0].first_audio_at - started  # type: ignore[operator]
    # Whole-reply rendering would take len(pieces) * 0.25 s before any audio; streaming takes one render.
    assert first_audio_s < 0.25 * (len(pieces) - 1), (first_audio_s, len(pieces))
    prompt = session.prompts_played[0]
    await asyncio.wait_for(prompt.wait_for_playout(), 30)
    assert synth.texts == pieces and prompt.played_ms == 1000 * len(pieces)
    leg.hang_up("bye")
    assert await asyncio.wait_for(task, 10) == "abandoned"


async def test_barge_in_during_a_streamed_reply_stops_the_rendering() -> None:
    synth = SlowSynthesizer(render_s=0.6)
    session, leg, task = await _call(synth, STATUS_REPLY, ["agente"])
    await _first_prompt(session)
    await asyncio.sleep(0.3)
    await leg.say(speech("상담원 연결해 주세요") + silence(700))
    assert await asyncio.wait_for(task, 20) == "completed"
    greeting = session.prompts_played[0]
    assert greeting.interrupted
    assert len([t for t in synth.texts if t != "Adiós."]) < len(split_sentences(STATUS_REPLY))


async def test_a_prerendered_text_plays_whole() -> None:
    synth = SlowSynthesizer(render_s=0.01)
    synth.prerendered.append(STATUS_REPLY)
    session, leg, task = await _call(synth, STATUS_REPLY, [])
    await _first_prompt(session)
    leg.hang_up("bye")
    await asyncio.wait_for(task, 10)
    assert synth.texts[0] == STATUS_REPLY

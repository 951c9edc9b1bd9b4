"""An overloaded recognizer degrades gracefully: the real session, stream, VAD and endpointer over a slow decoder
behind the `Decoder` seam, decoding in a bounded pool of one thread with its backlog (ivr.speech.backlog). A late
final gets "Un momento, por favor." once, then the reply; past the second bound the utterance's decode is dropped
and the prompt's answer is asked on the keypad; the caller is never left in silence."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from foundation.config import Settings
from ivr.call.session import CallSession, SessionPhrases
from ivr.dialogue.interface import DialogueReply, Expect
from ivr.engine import stream_config
from ivr.metrics import EngineMetrics
from ivr.speech.backlog import DecodeBacklog
from ivr.speech.recognizer import RecognizeStream
from ivr.speech.speech_vad import preload_silero
from testkit.fakes import FakeDialogue, FakeLeg, FakeRecorder, ScriptedDecoder, ToneSynthesizer
from testkit.sounds import silence, speech

pytestmark = pytest.mark.timeout(40)
P = SessionPhrases()
FAST_TURNS = dict(no_input_timeout_s=3.0, endpoint_silence_ms_free=300, endpoint_silence_ms_closed=250,
                  dtmf_inter_digit_timeout_s=0.4, barge_in_min_speech_ms=200)


@pytest.fixture(scope="module", autouse=True)
def _speech_vad_loaded() -> None:
    preload_silero()


@pytest.fixture
async def pool() -> AsyncIterator[ThreadPoolExecutor]:
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slow-asr")
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


class SlowRecognizer:
    """The worker's in-process provider shape (one pool, one backlog for all calls) over a slow decoder."""

    def __init__(self, texts: list[str], config: object, pool: ThreadPoolExecutor, final_delay_s: float) -> None:
        self.texts, self.config, self.pool, self.final_delay_s = texts, config, pool, final_delay_s
        self.backlog = DecodeBacklog(1)
        self.decoders: list[ScriptedDecoder] = []

    def stream(self, call_id: str, sample_rate: int) -> RecognizeStream:
        decoder = ScriptedDecoder(self.texts, rate=sample_rate, final_delay_s=self.final_delay_s)
        self.decoders.append(decoder)
        s = RecognizeStream(lambda: decoder, self.pool, self.config, sample_rate=sample_rate,  # type: ignore[arg-type]
                            call_id=call_id, backlog=self.backlog)
        s.start()
        return s


class Call:
    def __init__(self, greeting: DialogueReply, replies: list[DialogueReply], texts: list[str],
                 pool: ThreadPoolExecutor, *, final_delay_s: float, max_wait_ms: int, max_wait_keypad_ms: int,
                 prompt_ms: int = 400, recognizer: SlowRecognizer | None = None) -> None:
        base = Settings()
        # model_copy skips validation on purpose: time limits shorter than production allows
        self.settings = base.model_copy(update={
            "turns": base.turns.model_copy(update=FAST_TURNS),
            "asr": base.asr.model_copy(update={"max_wait_ms": max_wait_ms, "max_wait_keypad_ms": max_wait_keypad_ms}),
        })
        self.leg = FakeLeg()
        self.recorder = FakeRecorder(leg=self.leg)
        self.dialogue = FakeDialogue(greeting, replies)
        self.asr = recognizer or SlowRecognizer(texts, stream_config(self.settings), pool, final_delay_s)
        self.synth = ToneSynthesizer(prompt_ms)
        self.metrics = EngineMetrics()
        self.session = CallSession(self.leg, settings=self.settings, dialogue=self.dialogue, recognizer=self.asr,
                                   synthesizer=self.synth, recorder=self.recorder, metrics=self.metrics)
        self.task = asyncio.create_task(self.session.run())

    async def wait_prompts(self, n: int, limit_s: float = 15.0) -> None:
        async with asyncio.timeout(limit_s):
            while len(self.session.prompts_played) < n:  # noqa: ASYNC110 - the session exposes no event
                await asyncio.sleep(0.01)

    async def wait_prompt_done(self, index: int) -> None:
        await self.wait_prompts(index + 1)
        async with asyncio.timeout(15):
            while not self.session.prompts_played[index].done:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    def texts(self) -> list[str]:
        return [p.text for p in self.session.prompts_played]

    def metric(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0

    async def result(self) -> str:
        return await asyncio.wait_for(self.task, 20)


def free(*texts: str, **kw: Any) -> DialogueReply:
    return DialogueReply(texts=texts, expect=Expect(kind="free"), **kw)


BYE = DialogueReply(texts=("Adiós.",), hangup=True)


async def test_a_late_final_gets_one_hold_phrase_then_the_answer(pool: ThreadPoolExecutor) -> None:
    call = Call(free("¿En qué le ayudo?"), [free("Con gusto.", intent="tourism"), BYE], ["quiero turismo", "nada"],
                pool, final_delay_s=1.5, max_wait_ms=400, max_wait_keypad_ms=0)
    await call.wait_prompt_done(0)
    await call.leg.say(speech("안녕하세요") + silence(500))
    await call.wait_prompts(3)
    assert call.texts()[1:3] == [P.one_moment, "Con gusto."]
    hold, reply = call.session.prompts_played[1:3]
    assert not hold.interrupted and hold.done               # said whole, the answer after it
    assert reply.first_audio_at is not None and hold.first_audio_at is not None
    assert reply.first_audio_at >= hold.first_audio_at + hold.duration_ms / 1000 - 0.05
    assert [t.text for t in call.dialogue.turns] == ["quiero turismo"]
    assert call.metric("veratur_asr_hold_total") == 1
    assert call.metric("veratur_dialogue_filler_total") == 0     # not "Un momento" twice
    assert call.metric("veratur_asr_final_dropped_total") == 0
    # the engine's turn latency is the answer's, not the hold phrase's
    assert call.session.turn_latencies and min(call.session.turn_latencies) >= 1.4
    await call.wait_prompt_done(2)
    await call.leg.say(speech("감사합니다") + silence(500))
    assert await call.result() == "completed"
    assert call.metric("veratur_asr_hold_total") == 2           # each late final: once


async def test_a_backlog_that_predicts_a_long_wait_holds_at_once(pool: ThreadPoolExecutor) -> None:
    call = Call(free("¿En qué le ayudo?"), [free("Con gusto."), BYE], ["quiero turismo"],
                pool, final_delay_s=1.2, max_wait_ms=1000, max_wait_keypad_ms=0)
    # the pool's recent decodes took 1.2 s and two finals of other calls are waiting: ~3.6 s for the next
    backlog = call.asr.backlog
    backlog.done("earlier", 1.2)
    backlog.enqueue("other-1")
    backlog.enqueue("other-2")
    await call.wait_prompt_done(0)
    said_until = await call.leg.say(speech("안녕하세요") + silence(500))
    await call.wait_prompts(2)
    hold = call.session.prompts_played[1]
    assert hold.text == P.one_moment and hold.first_audio_at is not None
    # `said_until` is the end of the 500 ms of silence after the speech: the endpoint (300 ms) closed ~0.2 s before
    # it, so the 1 s bound, had it been waited out, would come ~0.8 s after it; the estimate decided at once
    assert hold.first_audio_at - said_until < 0.6, hold.first_audio_at - said_until
    await call.wait_prompts(3)
    assert call.texts()[2] == "Con gusto."
    call.leg.hang_up()
    await call.result()


async def test_past_the_second_bound_the_decode_is_dropped_and_the_keys_are_asked(pool: ThreadPoolExecutor) -> None:
    question = DialogueReply(texts=("¿Confirma su solicitud? Diga sí o no, o marque uno para sí y dos para no.",),
                             expect=Expect(kind="yes_no"))
    call = Call(question, [free("Listo.", intent="affirm"), BYE], ["sí"], pool, final_delay_s=3.0,
                max_wait_ms=300, max_wait_keypad_ms=1000)
    await call.wait_prompt_done(0)
    said_until = await call.leg.say(speech("네") + silence(400))
    await call.wait_prompts(3)
    assert call.texts()[1] == P.one_moment
    keys = call.session.prompts_played[2]
    assert keys.text == f"{P.speech_busy} Marque uno para sí y dos para no."
    assert keys.first_audio_at is not None and keys.first_audio_at - said_until < 2.0    # ~1 s + the hold phrase
    assert call.metric("veratur_asr_final_dropped_total") == 1
    await call.wait_prompt_done(2)
    call.leg.press("1")
    await call.wait_prompts(4)
    assert call.texts()[3] == "Listo."
    await asyncio.sleep(2.0)          # the dropped utterance's decode ends now: its "sí" must not answer anything
    assert [(t.text, t.dtmf) for t in call.dialogue.turns] == [(None, "1")]
    assert call.asr.backlog.waiting == 0
    call.leg.hang_up()
    await call.result()


async def test_an_utterance_dropped_before_its_decode_starts_costs_no_decode(pool: ThreadPoolExecutor) -> None:
    """Two calls on one pool of one thread: the second's final waits behind the first's 5 s decode; it is
    dropped at its keypad bound (1.2 s) before it starts, so it is never decoded."""
    greeting = free("¿En qué le ayudo?")
    first = Call(greeting, [free("Con gusto."), BYE], ["uno"], pool, final_delay_s=5.0, max_wait_ms=0,
                 max_wait_keypad_ms=0)          # this one waits for its decode whatever it takes
    second = Call(greeting, [free("Con gusto."), BYE], ["dos"], pool, final_delay_s=5.0, max_wait_ms=0,
                  max_wait_keypad_ms=1200, recognizer=first.asr)
    await first.wait_prompt_done(0)
    await second.wait_prompt_done(0)
    await first.leg.say(speech("안녕하세요") + silence(500))
    await asyncio.sleep(0.3)                                    # the first's decode has the only thread
    said_until = await second.leg.say(speech("안녕하세요") + silence(500))
    await second.wait_prompts(2)
    keys = second.session.prompts_played[1]
    assert keys.text.startswith(P.speech_busy) and keys.first_audio_at is not None
    assert keys.first_audio_at - said_until < 2.0               # ~1.2 s after the end of speech, not 5 s +
    await first.wait_prompts(2, limit_s=20)
    assert first.texts()[1] == "Con gusto."                     # the first was decoded and answered
    await asyncio.sleep(0.5)
    first_dec, second_dec = first.asr.decoders
    assert first_dec.finals == 1
    assert second_dec.finals == 0 and second_dec.resets >= 1    # dropped before its decode: never decoded
    assert second.metric("veratur_asr_final_dropped_total") == 1
    assert first.asr.backlog.waiting == 0 and first.asr.backlog.dropped_total == 1
    for call in (first, second):
        call.leg.hang_up()
        await call.result()

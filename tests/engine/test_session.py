"""Timeline-scripted call sessions: FakeLeg + FakeDialogue + FakeRecorder around the real session, prompt,
VAD, endpointing and DTMF logic (scripted text instead of Vosk; Vosk has its own tests)."""
from __future__ import annotations

import asyncio
import binascii
from typing import Any

import pytest

from foundation.config import Settings
from ivr.call.session import CallSession, SessionPhrases
from ivr.dialogue.interface import DialogueReply, Expect
from ivr.engine import stream_config
from ivr.metrics import EngineMetrics
from ivr.speech.speech_vad import preload_silero
from testkit.fakes import FakeDialogue, FakeLeg, FakeRecorder, ScriptedRecognizer, ToneSynthesizer
from testkit.sounds import cough, silence, speech

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module", autouse=True)
def _speech_vad_loaded() -> None:
    # The engine loads the speech VAD's model at start; sessions built directly here must not race its import.
    preload_silero()

P = SessionPhrases()
FAST_TURNS = dict(no_input_timeout_s=0.5, endpoint_silence_ms_free=300, endpoint_silence_ms_closed=200,
                  dtmf_inter_digit_timeout_s=0.4, barge_in_min_speech_ms=200, max_no_input=3, max_no_match=3)


def make_settings(**turns: Any) -> Settings:
    base = Settings()
    # model_copy skips validation on purpose: tests use time limits shorter than production allows.
    return base.model_copy(update={"turns": base.turns.model_copy(update={**FAST_TURNS, **turns})})


class Call:
    """One scripted call: the session running in a task, its fakes at hand."""

    def __init__(self, greeting: DialogueReply, replies: list[DialogueReply] | None = None, *,
                 texts: list[str] | None = None, prompt_ms: int = 400, folio: str | None = None,
                 **turns: Any) -> None:
        self.settings = make_settings(**turns)
        self.leg = FakeLeg()
        self.recorder = FakeRecorder(folio=folio, leg=self.leg)
        self.dialogue = FakeDialogue(greeting, replies or [DialogueReply(texts=("Adiós.",), hangup=True)])
        self.asr = ScriptedRecognizer(texts or [], stream_config(self.settings))
        self.synth = ToneSynthesizer(prompt_ms)
        self.metrics = EngineMetrics()
        self.session = CallSession(self.leg, settings=self.settings, dialogue=self.dialogue, recognizer=self.asr,
                                   synthesizer=self.synth, recorder=self.recorder, metrics=self.metrics)
        self.task = asyncio.create_task(self.session.run())

    async def result(self, limit_s: float = 20.0) -> str:
        disposition = await asyncio.wait_for(self.task, limit_s)
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        assert leftover == [], f"tasks leaked: {leftover}"
        assert self.session.stream is not None and self.session.stream.closed
        assert all(d.closed for d in self.asr.decoders if d.total_bytes or d.finals or d.resets)
        return disposition

    async def wait_prompt_done(self, index: int, limit_s: float = 10.0) -> None:
        async def _wait() -> None:
            while len(self.session.prompts_played) <= index or not self.session.prompts_played[index].done:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_wait(), limit_s)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


def free(*texts: str, **kw: Any) -> DialogueReply:
    return DialogueReply(texts=texts, expect=Expect(kind="free"), **kw)


async def test_greeting_plays_then_hangup_mid_prompt_cleans_up() -> None:
    call = Call(free("Bienvenido."), prompt_ms=3000)
    await asyncio.sleep(0.5)
    assert call.leg.sent_ms >= 300
    assert any(b != 0 for b in call.leg.sent[:1600])            # audio, not silence
    call.leg.hang_up("bye")
    assert await call.result() == "abandoned"
    assert call.session.prompts_played[0].played_ms < 3000
    assert call.recorder.ended == [("call-1", "abandoned", None)]
    assert call.dialogue.ended == 1
    assert call.leg.hangup_calls == 0                           # the caller hung up: no BYE from us


async def test_speech_turn_is_committed_before_the_reply_is_spoken() -> None:
    call = Call(free("¿En qué le ayudo?"), [free("Con gusto.", intent="tourism"),
                                            DialogueReply(texts=("Adiós.",), hangup=True)],
                texts=["quiero turismo", "nada"])
    await call.wait_prompt_done(0)
    await call.leg.say(speech("안녕하세요") + silence(700))
    await call.wait_prompt_done(1)
    await call.leg.say(speech("감사합니다") + silence(700))
    assert await call.result() == "completed"
    assert [t.text for t in call.dialogue.turns] == ["quiero turismo", "nada"]
    caller = [t for t in call.recorder.turns if t.speaker == "caller"]
    assert caller[0].text == "quiero turismo" and caller[0].intent == "tourism"
    # Committed when only the greeting had been queued (4 chunks of 100 ms), before any reply audio.
    assert caller[0].leg_plays == 4
    reply_turn = call.recorder.turns[call.recorder.turns.index(caller[0]) + 1]
    assert reply_turn.speaker == "portal" and reply_turn.leg_plays == 4
    assert len(call.session.turn_latencies) == 2 and all(x > 0 for x in call.session.turn_latencies)
    assert call.metric("veratur_turn_latency_seconds_count") == 2
    assert call.leg.hangup_calls == 1


async def test_barge_in_cuts_playback() -> None:
    call = Call(free("Un mensaje largo."), [DialogueReply(texts=("Adiós.",), hangup=True)],
                texts=["agente"], prompt_ms=4000)
    await asyncio.sleep(0.6)
    await call.leg.say(speech("상담원 연결해 주세요") + silence(600))
    assert await call.result() == "completed"
    greeting = call.session.prompts_played[0]
    assert greeting.interrupted and greeting.played_ms < 3000
    assert call.leg.clear_calls >= 1
    assert call.metric("veratur_barge_in_total") == 1
    assert call.dialogue.turns[0].text == "agente"


async def test_cough_and_click_do_not_cut_the_prompt() -> None:
    call = Call(free("Un mensaje."), texts=[""], prompt_ms=2000)
    await asyncio.sleep(0.4)
    await call.leg.say(cough() + silence(400))
    await call.wait_prompt_done(0)
    greeting = call.session.prompts_played[0]
    assert not greeting.interrupted and greeting.played_ms == 2000
    assert call.leg.clear_calls == 0
    assert call.dialogue.turns == []          # a wordless cough is not an answer either
    call.leg.hang_up()
    await call.result()


async def test_no_barge_in_prompt_plays_through_and_ignores_speech_over_it() -> None:
    call = Call(DialogueReply(texts=("Aviso legal.",), barge_in=False),
                [DialogueReply(texts=("Adiós.",), hangup=True)], texts=["primera", "segunda"], prompt_ms=3000)
    await asyncio.sleep(0.3)
    await call.leg.say(speech("안녕하세요") + silence(600))
    await call.wait_prompt_done(0)
    assert not call.session.prompts_played[0].interrupted
    assert call.leg.clear_calls == 0
    await call.leg.say(speech("감사합니다") + silence(600))
    assert await call.result() == "completed"
    assert [t.text for t in call.dialogue.turns] == ["segunda"]


async def test_no_input_reprompts_taper_then_agent() -> None:
    call = Call(free("Bienvenido.", "¿Qué trámite busca?"))
    assert await call.result() == "transferred"                       # no-input runs out -> agent
    said = [p.text for p in call.session.prompts_played]
    assert said == ["Bienvenido. ¿Qué trámite busca?",
                    f"{P.still_there} ¿Qué trámite busca?",           # say less: only the question
                    f"{P.still_there} {P.dtmf_menu}",                 # then the keypad menu
                    P.handoff]
    assert "why=no_input" in binascii.unhexlify(call.leg.transfers[0][1]["User-to-User"].split(";")[0]).decode()
    assert call.metric("veratur_no_input_total") == 3
    assert call.dialogue.turns == []
    assert call.leg.hangup_calls == 1


async def test_no_match_then_dtmf_menu_then_agent_with_case_headers() -> None:
    nomatch = free("No entendí.", "¿Qué desea?", intent="nlu_fallback")
    call = Call(free("¿Qué desea?"), [nomatch], texts=["blabla", "blabla", "blabla"], folio="VER-2026-000123")
    for i in range(3):
        await call.wait_prompt_done(i)
        await call.leg.say(speech("모르겠어요") + silence(600))
    assert await call.result() == "transferred"
    said = [p.text for p in call.session.prompts_played]
    assert said[1] == "No entendí. ¿Qué desea?"
    assert said[2] == f"{P.not_understood} {P.dtmf_menu}"
    assert said[3] == f"{P.not_understood} {P.handoff}"
    assert call.metric("veratur_no_match_total") == 3
    target, headers = call.leg.transfers[0]
    assert target == call.settings.escalation.agent_queue_uri
    assert headers["X-Veratur-Case"] == "VER-2026-000123"
    hexpart, *params = headers["User-to-User"].split(";")
    assert params[0] == "encoding=hex" and params[1].startswith("purpose=")
    assert binascii.unhexlify(hexpart).decode().startswith("case=VER-2026-000123;")
    assert call.recorder.ended == [("call-1", "transferred", target)]
    assert call.metric("veratur_transfers_total", result="ok") == 1


async def test_dtmf_terminator_and_inter_digit_timeout() -> None:
    digits = Expect(kind="digits", max_digits=12)
    call = Call(DialogueReply(texts=("Marque su folio.",), expect=digits),
                [DialogueReply(texts=("Y su NIP.",), expect=digits), DialogueReply(texts=("Adiós.",), hangup=True)])
    await call.wait_prompt_done(0)
    call.leg.press("123#")
    await call.wait_prompt_done(1)
    call.leg.press("45")                       # no terminator: the inter-digit timeout ends it
    assert await call.result() == "completed"
    assert [t.dtmf for t in call.dialogue.turns] == ["123", "45"]
    assert [t.text for t in call.recorder.turns if t.speaker == "caller"] == ["[DTMF 123]", "[DTMF 45]"]


async def test_dtmf_key_barges_in_and_speech_prompt_accepts_keys() -> None:
    call = Call(free("Diga o marque una opción."), prompt_ms=4000)
    await asyncio.sleep(0.5)
    call.leg.press("2")
    assert await call.result() == "completed"
    assert call.session.prompts_played[0].interrupted
    assert call.dialogue.turns[0].dtmf == "2"


async def test_max_call_duration_says_goodbye_and_hangs_up() -> None:
    call = Call(free("Hola."), [free("Otra vez.")], texts=["a"] * 10, max_call_duration_s=1.2,
                no_input_timeout_s=5.0)
    assert await call.result() == "completed"
    assert call.session.prompts_played[-1].text == P.time_limit
    assert call.leg.hangup_calls == 1


async def test_transfer_failure_apologizes_and_records_it() -> None:
    call = Call(DialogueReply(texts=("Con gusto.",), transfer=True))
    call.leg.transfer_ok = False
    assert await call.result() == "transfer_failed"
    assert call.session.prompts_played[-1].text == P.transfer_failed
    assert call.metric("veratur_transfers_total", result="failed") == 1


async def test_dialogue_failure_hands_over_to_an_agent() -> None:
    call = Call(free("Hola."), texts=["turismo"])
    call.dialogue.fail_on_turn = 0
    await call.wait_prompt_done(0)
    call.leg.press("1")
    assert await call.result() == "transferred"
    assert call.session.prompts_played[-1].text == f"{P.trouble} {P.handoff}"


async def test_recorder_down_does_not_drop_the_call() -> None:
    call = Call(free("Hola."), texts=["turismo"])
    call.recorder.fail_add_turn = True
    call.recorder.fail_call_started = True
    await call.wait_prompt_done(0)
    call.leg.press("1")
    assert await call.result() == "completed"
    assert call.dialogue.turns[0].dtmf == "1"


async def test_unrecognized_speech_counts_as_no_match_without_asking_the_dialogue() -> None:
    call = Call(free("¿Qué desea?"), texts=["", "turismo"])
    await call.wait_prompt_done(0)
    await call.leg.say(speech("모르겠어요 정말") + silence(600))
    await call.wait_prompt_done(1)
    await call.leg.say(speech("관광") + silence(600))
    assert await call.result() == "completed"
    assert call.session.prompts_played[1].text == f"{P.not_understood} ¿Qué desea?"
    assert [t.text for t in call.dialogue.turns] == ["turismo"]


async def test_silence_is_never_decoded() -> None:
    call = Call(free("Hola."), prompt_ms=200, no_input_timeout_s=3.0)
    await call.wait_prompt_done(0)
    await call.leg.say(silence(1500))
    stream = call.session.stream
    assert stream is not None and stream.frames_in >= 70
    assert stream.frames_decoded == 0
    call.leg.hang_up()
    await call.result()


async def test_recognizer_crash_leaves_the_keypad_working() -> None:
    call = Call(free("Hola."), texts=["x"])
    call.asr.fail = True                       # before the session starts its stream
    await call.wait_prompt_done(0)
    await call.leg.say(speech("안녕하세요") + silence(300))
    call.leg.press("1")
    assert await call.result() == "completed"
    assert call.dialogue.turns[0].dtmf == "1"


async def test_closed_answers_get_a_grammar() -> None:
    call = Call(DialogueReply(texts=("¿Sí o no?",), expect=Expect(kind="yes_no")),
                [DialogueReply(texts=("Folio.",), expect=Expect(kind="digits", max_digits=4)),
                 DialogueReply(texts=("Adiós.",), hangup=True)])
    await call.wait_prompt_done(0)
    call.leg.press("1")
    await call.wait_prompt_done(1)
    call.leg.press("1234")
    await call.result()
    phrases = call.asr.decoders[0].phrases
    assert phrases[0] is not None and "sí" in phrases[0] and "no" in phrases[0]
    assert phrases[1] is not None and {"uno", "cero", "nueve"} <= set(phrases[1])


async def test_prompts_are_resampled_to_the_leg_rate() -> None:
    call = Call(free("Hola."), prompt_ms=400)
    call.leg.sample_rate = 16000                  # a wideband leg; the synthesizer renders at 8 kHz
    await call.wait_prompt_done(0)
    assert 390 <= call.session.prompts_played[0].duration_ms <= 410
    assert len(call.session.prompts_played[0].pcm) == 2 * 16000 * 400 // 1000
    call.leg.hang_up()
    await call.result()


async def test_a_failing_edge_ends_the_call_cleanly() -> None:
    from testkit.fakes import BrokenLeg
    call = Call(free("Hola."), prompt_ms=2000)
    call.leg = BrokenLeg(fail_after=1)
    call.recorder.leg = call.leg
    call.session.leg = call.leg              # swapped before the session task first runs
    await asyncio.sleep(0.3)
    call.leg.press("1")
    call.leg.press("2")
    assert await call.result() == "error"
    assert call.session.hangup_reason == "leg_error"
    assert call.recorder.ended == [("call-1", "error", None)]


async def test_speech_result_superseded_by_keys_does_not_answer_the_next_prompt() -> None:
    call = Call(free("¿Qué desea?"), [free("Bien."), DialogueReply(texts=("Adiós.",), hangup=True)],
                texts=["viejo", "nuevo"])
    call.asr.final_delay_s = 0.6                                  # results take a while to come back
    await call.wait_prompt_done(0)
    await call.leg.say(speech("안녕하세요") + silence(320))     # endpoint reached (300 ms), result in flight
    call.leg.press("1")                                           # ... but the keys answer first
    await call.wait_prompt_done(1)
    await call.leg.say(speech("감사합니다") + silence(600))
    assert await call.result() == "completed"
    assert [(t.dtmf, t.text) for t in call.dialogue.turns] == [("1", None), (None, "nuevo")]


async def test_secret_answers_and_redacted_read_backs_stay_out_of_the_transcript() -> None:
    pin = Expect(kind="digits", max_digits=4, secret=True)
    call = Call(DialogueReply(texts=("Su NIP, por favor.",), expect=pin),
                [DialogueReply(texts=("Su folio es 1 2 3 y su NIP es 4 5 6 7.",), hangup=True,
                               transcript_texts=("Su folio es 1 2 3 y su NIP es *, *, *, *.",))])
    await call.wait_prompt_done(0)
    call.leg.press("9876#")
    assert await call.result() == "completed"
    assert call.dialogue.turns[0].dtmf == "9876"              # the dialogue gets the digits to verify them
    texts = [t.text for t in call.recorder.turns]
    assert "[DTMF ****]" in texts
    assert not any("9876" in t or "4 5 6 7" in t for t in texts)

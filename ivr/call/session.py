"""One call, from the greeting to the hang-up or the transfer: the per-call state machine.

    greeting -> listen -> endpoint -> understand -> speak -> listen -> ... -> transfer | hangup

Pure asyncio over the `CallLeg` seam, so it runs the same against pjsua2 and against the in-memory legs of the
tests. The session owns its tasks (leg reader, ASR event pump, prompt feeder), its recognizer stream and its
playback, and releases all of them in `run()`'s teardown whatever ends the call.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from foundation.config import Settings
from foundation.logs import kv, mask_phone, scrub
from ivr.call import overload
from ivr.call.dtmf import DtmfCollector
from ivr.call.escalation import EscalationIO, EscalationPhrases, case_headers, run_escalation
from ivr.call.leg import AudioIn, CallLeg, DtmfIn, HangupIn
from ivr.call.overload import keypad_question, late_final
from ivr.call.prompt import Prompt
from ivr.call.records import CallRecorder, Disposition
from ivr.call.stats import CallStats
from ivr.dialogue.interface import CallerTurn, Dialogue, DialogueReply, Expect, TurnContext
from ivr.metrics import EngineMetrics
from ivr.speech.audio_ops import resample
from ivr.speech.recognizer import (
    EndOfSpeech,
    Final,
    Partial,
    RecognizeStream,
    SpeechProgress,
    SpeechRecognizer,
    SpeechStarted,
)
from ivr.speech.tts import SpeechSynthesizer, split_sentences
from ivr.speech.vad import BargeInGuard

log = logging.getLogger("ivr.call.session")

NO_MATCH_INTENTS = frozenset({"no_match", "nlu_fallback", "out_of_scope"})
CLOSING_PROMPT_MAX_S = 15.0      # a goodbye/time-limit phrase is never allowed to hold the call longer
TEARDOWN_STEP_S = 5.0            # each teardown step (dialogue end, recorder) gets at most this long
# The dialogue has not answered this long (Rasa slow or stalled: its timeout is 2 s): a short filler is said so the
# caller never hears more than ~1 s of dead air (issue 13: 2.05 s of silence with Rasa stopped).
FILLER_AFTER_S = 0.8


@dataclass(frozen=True, slots=True)
class SessionPhrases:
    """What the engine itself says (reprompts, hand-off, closing); the dialogue says everything else."""
    still_there: str = "¿Sigue ahí?"
    not_understood: str = "Disculpe, no le entendí."
    dtmf_menu: str = "También puede usar el teclado: " + overload.MAIN_KEYS
    offer_agent: str = "Si lo prefiere, marque 0 para hablar con un agente."
    handoff: str = "Le comunico con un agente. Por favor espere en la línea."
    transfer_failed: str = "En este momento no hay agentes disponibles. Por favor llame más tarde. Hasta luego."
    goodbye_no_input: str = "No escuchamos su respuesta. Gracias por llamar al portal de Veracruz. Hasta luego."
    time_limit: str = "Hemos llegado al tiempo máximo de la llamada. Gracias por llamar. Hasta luego."
    trouble: str = "Tuvimos un problema técnico."
    one_moment: str = "Un momento, por favor."
    # the recognizer is overloaded (asr.max_wait_keypad_ms): the answer to the prompt is asked on the keypad
    speech_busy: str = "Disculpe, en este momento no alcanzo a procesar su voz."
    keypad_city: str = overload.CITY_KEYS        # ... and the prompt was a city question (ivr.call.overload)
    keypad_free: str = overload.FREE_KEYS        # ... an open question, or one that expects nothing

    def all(self) -> list[str]:
        return [str(v) for v in dataclasses.asdict(self).values()]


def transfer_headers(folio: str | None, call_id: str, reason: str = "caller_request") -> dict[str, str]:
    """SIP headers that carry the case to the agent: X-Veratur-Case and an RFC 7433 User-to-User header."""
    return case_headers(folio, call_id, reason)


# Internal events of the session's inbox, besides DtmfIn and the ASR events.
@dataclass(frozen=True, slots=True)
class _PlayoutDone:
    prompt: Prompt


class _CallOver(Exception):
    """Raised inside the conversation to end it with a disposition."""

    def __init__(self, disposition: Disposition, target: str | None = None) -> None:
        super().__init__(disposition)
        self.disposition: Disposition = disposition
        self.target = target


class CallSession:
    """The conversation of one call. `await run()` returns when the call is over and everything is released."""

    def __init__(self, leg: CallLeg, *, settings: Settings, dialogue: Dialogue, recognizer: SpeechRecognizer,
                 synthesizer: SpeechSynthesizer, recorder: CallRecorder, metrics: EngineMetrics,
                 phrases: SessionPhrases | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.leg = leg
        self.settings = settings
        self.turns_cfg = settings.turns
        self.dialogue = dialogue
        self.recognizer = recognizer
        self.synth = synthesizer
        self.recorder = recorder
        self.metrics = metrics
        self.phrases = phrases or SessionPhrases()
        self.clock = clock
        self.call_id = leg.info.call_id
        self.ctx = TurnContext(call_id=self.call_id, case_folio=None, caller_number=leg.info.caller)
        self.guard = BargeInGuard(self.turns_cfg.barge_in_min_speech_ms)
        self.dtmf = DtmfCollector(self.turns_cfg.dtmf_inter_digit_timeout_s)
        self.stream: RecognizeStream | None = None
        self.prompt: Prompt | None = None
        self.no_input = 0
        self.no_match = 0
        self.disposition: Disposition = "completed"
        self.transfer_target: str | None = None
        self.bridged_to: str | None = None         # set once a bridged agent call is up (escalation.mode: bridge)
        self._gone = asyncio.Event()                # the leg is gone (BYE, CANCEL, REFER done, media timeout)
        self._shield_hangup = False                 # while True a hang-up does not cancel the conversation
        self.hangup_reason: str | None = None
        self.turn_latencies: list[float] = []   # seconds, end of caller input -> first reply audio queued
        self.stats = CallStats()                  # the call-detail record's counters, sent at the end
        self.prompts_played: list[Prompt] = []
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._conversation: asyncio.Task[None] | None = None
        self._input_end_at: float | None = None    # end of the caller's last input (speech end or DTMF)
        self._superseded_upto = 0                  # utterances up to this seq were answered by keys instead
        self._hold: Prompt | None = None           # the last hold phrase said while a final was late
        self._held = False                         # a hold phrase was said for the turn the dialogue now answers

    # ---- lifecycle ----------------------------------------------------------------------------------------
    async def run(self) -> Disposition:
        info = self.leg.info
        log.info("call start %s", kv(call_id=self.call_id, caller=mask_phone(info.caller), node=info.node))
        try:
            folio = await asyncio.wait_for(self.recorder.call_started(info), TEARDOWN_STEP_S)
        except Exception:
            log.exception("recorder.call_started failed %s", kv(call_id=self.call_id))
            folio = None
        if folio:
            self.ctx = dataclasses.replace(self.ctx, case_folio=folio)
        try:
            self.stream = self.recognizer.stream(self.call_id, self.leg.sample_rate)
            self._tasks.append(asyncio.create_task(self._read_leg(), name=f"leg-{self.call_id}"))
            self._tasks.append(asyncio.create_task(self._pump_asr(self.stream), name=f"asrpump-{self.call_id}"))
            self._conversation = asyncio.create_task(self._converse_limited(), name=f"conv-{self.call_id}")
            try:
                await self._conversation
            except asyncio.CancelledError:
                if self.hangup_reason is None:
                    raise            # cancelled from outside (shutdown): teardown below, then propagate
                if self.bridged_to is not None:
                    self.disposition, self.transfer_target = "transferred", self.bridged_to
                else:
                    self.disposition = "error" if self.hangup_reason == "leg_error" else "abandoned"
        except _CallOver as over:
            self.disposition, self.transfer_target = over.disposition, over.target
        except Exception:
            log.exception("session failed %s", kv(call_id=self.call_id))
            self.disposition = "error"
        finally:
            await self._teardown()
        return self.disposition

    async def _converse_limited(self) -> None:
        try:
            async with asyncio.timeout(self.turns_cfg.max_call_duration_s):
                await self._converse()
        except TimeoutError:
            log.info("max call duration %s", kv(call_id=self.call_id, s=self.turns_cfg.max_call_duration_s))
            await self._say_closing(self.phrases.time_limit)
            raise _CallOver("completed") from None

    async def _teardown(self) -> None:
        tasks = [*self._tasks, *([self._conversation] if self._conversation else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.prompt is not None:
            await self.prompt.aclose()
        if self.stream is not None:
            try:
                await self.stream.aclose()
            except Exception:
                log.exception("closing the recognizer failed %s", kv(call_id=self.call_id))
        send_stats = getattr(self.recorder, "call_stats", None)   # optional: test recorders may not keep them
        if send_stats is not None:
            try:
                await asyncio.wait_for(send_stats(self.call_id, self.stats.summary(self.turn_latencies)),
                                       TEARDOWN_STEP_S)
            except Exception:
                log.exception("recorder.call_stats failed %s", kv(call_id=self.call_id))
        for step, coro in (("dialogue.end", self.dialogue.end(self.ctx)),
                           ("recorder.call_ended", self.recorder.call_ended(self.call_id, self.disposition,
                                                                           self.transfer_target))):
            try:
                await asyncio.wait_for(coro, TEARDOWN_STEP_S)
            except Exception:
                log.exception("%s failed %s", step, kv(call_id=self.call_id))
        if self.hangup_reason is None:
            try:
                await self.leg.hangup()
            except Exception:
                log.exception("hangup failed %s", kv(call_id=self.call_id))
        log.info("call end %s", kv(call_id=self.call_id, case=self.ctx.case_folio or "-",
                                   disposition=self.disposition, reason=self.hangup_reason or "portal"))

    # ---- inputs -------------------------------------------------------------------------------------------
    async def _read_leg(self) -> None:
        """Moves leg events in: audio to the recognizer (and the barge-in check), DTMF to the inbox."""
        stream = self.stream
        assert stream is not None
        reason = "leg_closed"
        try:
            async for event in self.leg.events():
                if isinstance(event, AudioIn):
                    for frame in event.frames:
                        stream.push_frame(frame)
                    self._check_barge_in()
                elif isinstance(event, DtmfIn):
                    prompt = self.prompt
                    if prompt is not None and not prompt.done and prompt.allow_barge_in:
                        self._barge_in(prompt, "dtmf")
                    self._inbox.put_nowait(event)
                elif isinstance(event, HangupIn):
                    reason = event.reason
                    break
        except Exception:
            # The edge failed under us: without inputs the call cannot go on; end it like a hang-up.
            log.exception("leg events failed %s", kv(call_id=self.call_id))
            reason = "leg_error"
        self.hangup_reason = reason
        self._gone.set()
        if self._shield_hangup:
            return          # a transfer is being decided: it reads the hang-up itself (REFER success ends the leg)
        if self._conversation is not None and not self._conversation.done():
            self._conversation.cancel()

    async def _pump_asr(self, stream: RecognizeStream) -> None:
        while True:
            event = await stream.get()
            if isinstance(event, (Partial, SpeechProgress)):    # words, or more speech (decoders without partials)
                self._check_barge_in()
            else:
                self._inbox.put_nowait(event)

    def _check_barge_in(self) -> None:
        prompt, stream = self.prompt, self.stream
        if prompt is None or prompt.done or stream is None or not stream.vad.confirmed:
            return
        if self.guard.should_interrupt(allow_barge_in=prompt.allow_barge_in, voiced_ms=stream.voiced_ms,
                                       partial=stream.partial, speech_vad=stream.speech_vad):
            self._barge_in(prompt, "speech")

    def _barge_in(self, prompt: Prompt, by: str) -> None:
        prompt.interrupt()
        self.metrics.barge_ins.inc()
        self.stats.barge_ins += 1
        log.info("barge-in %s", kv(call_id=self.call_id, by=by, played_ms=prompt.played_ms))

    # ---- output -------------------------------------------------------------------------------------------
    async def _play(self, texts: Sequence[str], *, allow_barge_in: bool) -> Prompt:
        """Start playing `texts` as one prompt; returns as soon as its first sentence is playing.

        A prerendered text plays whole; any other is synthesized sentence by sentence, the first before the prompt
        starts and the rest while it plays, so a 20-second reply starts as soon as a 2-second one."""
        hold = self._hold
        if hold is not None and not hold.done:       # "Un momento, por favor." is short: never cut, never overlapped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hold.wait_for_playout(), CLOSING_PROMPT_MAX_S)
        pieces = [piece for text in texts if text.strip()
                  for piece in ([text] if self.synth.cached(text) else split_sentences(text))]
        first, rest = b"", list(pieces)
        while rest and not first:
            first = await self._render(rest.pop(0))
        if pieces and not first:
            raise RuntimeError("text-to-speech failed for the whole prompt")
        prompt = Prompt(self.leg, first, allow_barge_in=allow_barge_in, text=" ".join(texts),
                        clock=self.clock, streaming=bool(rest))
        if rest:
            feeder = asyncio.create_task(self._render_rest(prompt, rest), name=f"tts-{self.call_id}")
            self._tasks = [t for t in self._tasks if not t.done()] + [feeder]
        self.prompt = prompt
        self.prompts_played.append(prompt)
        prompt.start()
        if self._input_end_at is not None and prompt.first_audio_at is not None:
            latency = prompt.first_audio_at - self._input_end_at
            self.turn_latencies.append(latency)
            self.metrics.turn_latency.observe(max(0.0, latency))
            log.info("turn latency %s", kv(call_id=self.call_id, ms=round(latency * 1000)))
            self._input_end_at = None
        waiter = asyncio.create_task(prompt.wait_for_playout(), name=f"playout-{self.call_id}")
        waiter.add_done_callback(lambda _t: self._inbox.put_nowait(_PlayoutDone(prompt)))
        self._tasks = [t for t in self._tasks if not t.done()] + [waiter]
        return prompt

    async def _render(self, text: str) -> bytes:
        """One text's audio at the leg's rate; b"" (logged) when it cannot be rendered, so one unspeakable text
        never drops the call and the rest of the prompt is still said."""
        try:
            pcm = await self.synth.synthesize(text)
        except Exception:
            log.exception("tts failed %s", kv(call_id=self.call_id, chars=len(text)))
            return b""
        if self.synth.sample_rate != self.leg.sample_rate:   # e.g. a 16 kHz leg on an 8 kHz node
            pcm = resample(pcm, self.synth.sample_rate, self.leg.sample_rate)
        return pcm

    async def _render_rest(self, prompt: Prompt, pieces: list[str]) -> None:
        try:
            for piece in pieces:
                if prompt.done:                 # interrupted (barge-in, hang-up): render nothing more
                    return
                prompt.append(await self._render(piece))
        finally:
            prompt.end_of_audio()

    async def _say_closing(self, *texts: str) -> None:
        """Say something that must not be cut (hand-off, goodbye), bounded in time."""
        prompt = await self._play(texts, allow_barge_in=False)
        try:
            await asyncio.wait_for(prompt.wait_for_playout(), CLOSING_PROMPT_MAX_S)
        except TimeoutError:
            prompt.interrupt()

    # ---- the conversation ---------------------------------------------------------------------------------
    async def _converse(self) -> None:
        reply = await self._dialogue(None)
        while True:
            if reply.transfer:
                await self._transfer(reply.texts, reply.transfer_reason or "caller_request")
                return
            if reply.hangup or reply.expect.kind == "none":
                await self._say_closing(*reply.texts)
                raise _CallOver("completed")
            self.stats.ask(reply.transcript_texts or reply.texts)
            turn = await self._ask(reply.texts, reply.expect, reply.barge_in)
            while turn is None or (turn.text is not None and not turn.text and not turn.dtmf):
                if turn is None:
                    turn = await self._reprompt_no_input(reply)
                else:
                    turn = await self._reprompt_no_match(reply, asr=True)
            expect_kind = reply.expect.kind
            reply = await self._dialogue(turn, secret=reply.expect.secret)
            self.stats.caller_turn(dtmf=bool(turn and turn.dtmf), expect_kind=expect_kind,
                                   text=turn.text if turn else None, intent=reply.intent)
            if reply.intent in NO_MATCH_INTENTS and not reply.transfer:
                reply = await self._taper_no_match(reply)
            else:
                self.no_match = 0

    async def _dialogue(self, turn: CallerTurn | None, *, secret: bool = False) -> DialogueReply:
        """Ask the dialogue (greeting when `turn` is None); commit the caller and portal turns before speaking."""
        guard_s = max(5.0, 3 * self.settings.dialogue.timeout_s)
        asked = self.dialogue.start(self.ctx) if turn is None else self.dialogue.turn(self.ctx, turn)
        pending = asyncio.ensure_future(asyncio.wait_for(asked, guard_s))
        filler: Prompt | None = None
        try:
            held, self._held = self._held, False
            done, _ = await asyncio.wait({pending}, timeout=FILLER_AFTER_S)
            if not done and not held:          # the caller was just told "Un momento": not twice
                self.metrics.dialogue_fillers.inc()
                filler = await self._play((self.phrases.one_moment,), allow_barge_in=False)
            reply = await pending
            if filler is not None and not filler.done:      # the answer follows the filler, never cuts it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(filler.wait_for_playout(), CLOSING_PROMPT_MAX_S)
        except Exception:
            log.exception("dialogue failed %s", kv(call_id=self.call_id))
            reply = DialogueReply(texts=(self.phrases.trouble,), transfer=True, fallback=True,
                                  transfer_reason="dialogue_error")
        if reply.fallback:
            self.metrics.dialogue_fallbacks.inc()
        if reply.case_folio and reply.case_folio != self.ctx.case_folio:
            self.ctx = dataclasses.replace(self.ctx, case_folio=reply.case_folio)
            await self._record(self.recorder.link_case(self.call_id, reply.case_folio))
        if turn is not None:
            text = turn.text if turn.text else f"[DTMF {turn.dtmf}]"
            if secret:        # the answer to a PIN/CURP question never reaches the transcript or the log
                text = "[verificación]" if turn.text else "[DTMF ****]"
            await self._record(self.recorder.add_turn(self.call_id, "caller", text, reply.intent,
                                                      reply.intent_confidence if reply.intent_confidence is not None
                                                      else turn.confidence))
            log.info("caller turn %s", kv(call_id=self.call_id, case=self.ctx.case_folio or "-",
                                          text=scrub(text), intent=reply.intent or "-"))
        if reply.texts:
            spoken_for_transcript = reply.transcript_texts or reply.texts   # a read-back PIN stays masked
            await self._record(self.recorder.add_turn(self.call_id, "portal", " ".join(spoken_for_transcript)))
        return reply

    async def _record(self, coro) -> None:  # type: ignore[no-untyped-def]
        # A recorder failure must not drop the call: the case bridge keeps its own outbox; we log and go on.
        try:
            await asyncio.wait_for(coro, TEARDOWN_STEP_S)
        except Exception:
            log.exception("recorder failed %s", kv(call_id=self.call_id))

    async def _taper_no_match(self, reply: DialogueReply) -> DialogueReply:
        self.no_match += 1
        self.metrics.no_match.inc()
        self.stats.missed("no_match")
        if self.no_match >= self.turns_cfg.max_no_match:
            return DialogueReply(texts=(self.phrases.not_understood,), transfer=True, intent=reply.intent,
                                 transfer_reason="no_match")
        if self.no_match == 1:
            return reply
        extra = (self.phrases.dtmf_menu,) if self.no_match == 2 else (self.phrases.dtmf_menu, self.phrases.offer_agent)
        return dataclasses.replace(reply, texts=(self.phrases.not_understood, *extra), expect=reply.expect)

    async def _reprompt_no_match(self, reply: DialogueReply, asr: bool) -> CallerTurn | None:
        """Speech came but nothing was recognized: taper like a dialogue no-match, without asking it."""
        tapered = await self._taper_no_match(
            dataclasses.replace(reply, texts=(self.phrases.not_understood, reply.texts[-1] if reply.texts else "")))
        if tapered.transfer:
            await self._transfer(tapered.texts, "no_match")
        self.stats.reask()
        return await self._ask(tapered.texts, reply.expect, reply.barge_in)

    async def _reprompt_no_input(self, reply: DialogueReply) -> CallerTurn | None:
        self.no_input += 1
        self.metrics.no_input.inc()
        self.stats.missed("no_input")
        log.info("no input %s", kv(call_id=self.call_id, count=self.no_input))
        if self.no_input >= self.turns_cfg.max_no_input:
            await self._transfer((), "no_input")
        question = reply.texts[-1] if reply.texts else ""
        if self.no_input == 1:
            texts: tuple[str, ...] = (self.phrases.still_there, question)     # say less: only the question
        elif self.no_input == 2:
            texts = (self.phrases.still_there, self.phrases.dtmf_menu)
        else:
            texts = (self.phrases.dtmf_menu, self.phrases.offer_agent)
        self.stats.reask()
        return await self._ask(texts, reply.expect, reply.barge_in)

    async def _ask(self, texts: Sequence[str], expect: Expect, allow_barge_in: bool) -> CallerTurn | None:
        """Play `texts` and listen (also during playback): the caller's turn, or None on no input."""
        stream = self.stream
        assert stream is not None
        stream.set_expect(expect)
        self.dtmf.set_expect(expect)
        self.dtmf.reset()
        prompt = await self._play(texts, allow_barge_in=allow_barge_in)
        listening_since: float | None = None
        drop_speech = False       # an utterance spoken over a prompt that may not be interrupted
        awaiting_final = False
        question = " ".join(texts)
        # the utterance whose final is awaited: its seq, since when, the wait the backlog predicted, held yet
        wait_seq, wait_since, wait_estimate, held = 0, 0.0, 0.0, False
        while True:
            if awaiting_final:
                action = late_final(waited_s=self.clock() - wait_since, estimate_s=wait_estimate,
                                    hold_ms=self.settings.asr.max_wait_ms,
                                    keypad_ms=self.settings.asr.max_wait_keypad_ms)
                if action == "keypad" and not stream.drop_final(wait_seq):
                    action = None                      # its final is already made: it is in the inbox
                if action == "keypad":
                    awaiting_final = False
                    self._superseded_upto = max(self._superseded_upto, wait_seq)
                    prompt = await self._ask_keys(stream, expect, question, wait_seq, wait_since, wait_estimate)
                    listening_since = None             # the no-input clock starts when the key question ends
                    continue
                if action is not None and not held and prompt.done:
                    held = self._held = True
                    self.metrics.asr_holds.inc()
                    self.stats.asr_holds += 1
                    log.info("final late: hold phrase %s",
                             kv(call_id=self.call_id, seq=wait_seq, waited_ms=round(1000 * (self.clock() - wait_since)),
                                estimate_ms=round(1000 * wait_estimate), waiting=stream.backlog.waiting))
                    self._hold = await self._play((self.phrases.one_moment,), allow_barge_in=False)
            timeout = self._next_timeout(listening_since, awaiting_final or stream.vad.in_utterance)
            try:
                event = await asyncio.wait_for(self._inbox.get(), timeout)
            except TimeoutError:
                event = None
            now = self.clock()
            if isinstance(event, _PlayoutDone):
                if event.prompt is prompt:
                    listening_since = now
                    if not prompt.allow_barge_in and stream.vad.in_utterance:
                        stream.discard_utterance()     # speech over a legal notice is not an answer
                continue
            if isinstance(event, DtmfIn):
                digits = self.dtmf.push(event.digit, event.timestamp)
                if digits is not None:
                    return self._dtmf_turn(digits, event.timestamp, stream)
                continue
            if isinstance(event, SpeechStarted):
                continue
            if isinstance(event, (EndOfSpeech, Final)) and event.seq <= self._superseded_upto:
                continue
            if isinstance(event, EndOfSpeech):
                if not prompt.done and not prompt.allow_barge_in:
                    drop_speech = True
                else:
                    awaiting_final = True
                    wait_seq, wait_since, held = event.seq, now, False
                    wait_estimate = stream.final_wait_estimate_s()
                continue
            if isinstance(event, Final):
                if drop_speech:
                    drop_speech = False
                    continue
                awaiting_final = False
                if event.dropped:      # the service dropped it undecoded: it waited past asr.max_wait_keypad_ms
                    prompt = await self._ask_keys(stream, expect, question, event.seq, wait_since, wait_estimate)
                    listening_since = None
                    continue
                if not event.text and event.voiced_ms < self.turns_cfg.barge_in_min_speech_ms:
                    continue        # a cough or a click with no words: not an answer, keep listening
                if not prompt.done:
                    self._barge_in(prompt, "final")
                self._input_end_at = event.speech_end_at
                return CallerTurn(text=event.text, confidence=event.confidence, event="speech")
            # A timeout: a pending DTMF string ends, or nobody answered.
            digits = self.dtmf.expire(now)
            if digits is not None:
                return self._dtmf_turn(digits, self.dtmf.last_digit_at or now, stream)
            if listening_since is not None and not awaiting_final and not stream.vad.in_utterance \
                    and not self.dtmf.pending and now - listening_since >= self.turns_cfg.no_input_timeout_s:
                return None

    async def _ask_keys(self, stream: RecognizeStream, expect: Expect, question: str, seq: int, since: float,
                        estimate_s: float) -> Prompt:
        """An utterance's decode was dropped (overload): ask for the prompt's answer on the keypad."""
        self.metrics.asr_finals_dropped.inc()
        self.stats.asr_dropped += 1
        log.info("final too late: keypad asked %s",
                 kv(call_id=self.call_id, seq=seq, waited_ms=round(1000 * (self.clock() - since)),
                    estimate_ms=round(1000 * estimate_s), waiting=stream.backlog.waiting))
        return await self._play(keypad_question(expect, question, lead=self.phrases.speech_busy,
                                                key_menu=self.phrases.dtmf_menu, city_keys=self.phrases.keypad_city,
                                                free_keys=self.phrases.keypad_free), allow_barge_in=True)

    def _dtmf_turn(self, digits: str, at: float, stream: RecognizeStream) -> CallerTurn:
        # The keys answered first: results of utterances ended so far must not answer a later prompt.
        self._superseded_upto = stream.utterances_ended
        stream.discard_utterance()
        if self.prompt is not None and not self.prompt.done:
            self.prompt.interrupt()
        self._input_end_at = at
        return CallerTurn(dtmf=digits, event="dtmf")

    def _next_timeout(self, listening_since: float | None, speech_open: bool) -> float | None:
        now = self.clock()
        deadlines = []
        dtmf_deadline = self.dtmf.deadline()
        if dtmf_deadline is not None:
            deadlines.append(dtmf_deadline)
        if listening_since is not None and not speech_open:
            deadlines.append(listening_since + self.turns_cfg.no_input_timeout_s)
        if speech_open:
            deadlines.append(now + 0.25)   # re-check the no-input clock when the utterance was a blip
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now) + 0.001

    async def _transfer(self, texts: Sequence[str], reason: str = "caller_request") -> NoReturn:
        """Hand the call to an agent (ivr.call.escalation): REFER or bridge, with the callback offer on failure."""
        self.stats.transfer_reason = reason
        io = EscalationIO(call_id=self.call_id, folio=lambda: self.ctx.case_folio, caller=self.leg.info.caller,
                          say=self._say_closing, ask=self._ask_escalation, leg=self.leg, recorder=self.recorder,
                          on_bridged=self._on_bridged, gone=self._gone, shield_hangup=self._set_shield)
        phrases = EscalationPhrases(handoff=self.phrases.handoff, callback_no=self.phrases.transfer_failed)
        outcome = await run_escalation(io, self.settings.escalation, texts, reason, phrases)
        self.metrics.transfers.labels(result="ok" if outcome.disposition == "transferred" else "failed").inc()
        raise _CallOver(outcome.disposition, outcome.target)

    async def _ask_escalation(self, texts: Sequence[str], expect: Expect) -> CallerTurn | None:
        return await self._ask(texts, expect, True)

    def _set_shield(self, on: bool) -> None:
        self._shield_hangup = on
        if not on and self._gone.is_set():
            raise _CallOver("abandoned")

    def _on_bridged(self, target: str) -> None:
        """The agent answered a bridged call: whoever hangs up later, the call was transferred."""
        self.bridged_to = target
        self.metrics.transfers.labels(result="ok").inc()

"""The engine of one IVR worker process: shared speech resources and one `CallSession` per call.

The SIP edge (`ivr.worker`) builds it once with `await Engine.create(settings, metrics)` and calls
`await engine.handle_call(leg)` for every answered call; `await engine.close()` at shutdown.
Created once per process: the Vosk model (shared by all calls), the bounded decoding pool, the TTS thread with
its prerendered prompts, the dialogue factory and the recorder.

Production defaults when the caller passes none: the dialogue is `ivr.dialogue.rasa.RasaDialogueFactory` (Rasa at
`dialogue.rasa_url`, with the YAML menu as per-turn fallback when Rasa is down or slow), and the recorder is
`ivr.call.recorder.CaseRecorder` over `CaseService.from_settings` with its outbox in `data_dir`, named after
`node` (give each worker its own node name: the outbox file is per name).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from foundation.config import Settings
from foundation.logs import kv
from ivr.call.leg import CallInfo, CallLeg
from ivr.call.outbox import Outbox
from ivr.call.records import CallRecorder, Disposition, Speaker
from ivr.call.session import CallSession, SessionPhrases
from ivr.dialogue.interface import Dialogue
from ivr.dialogue.menu import MenuDialogue, MenuSpec, load_menu
from ivr.metrics import EngineMetrics
from ivr.speech.backlog import DecodeBacklog
from ivr.speech.choice import build, choose
from ivr.speech.endpointing import EndpointConfig
from ivr.speech.recognizer import SpeechRecognizer, StreamConfig
from ivr.speech.service.client import service_recognizer
from ivr.speech.speech_vad import preload_silero
from ivr.speech.tts import EspeakSynthesizer, SpeechSynthesizer

log = logging.getLogger("ivr.engine")

DialogueFactory = Callable[[CallInfo], Dialogue]


class NullRecorder:
    """A `CallRecorder` that keeps nothing: used only when the engine is built without a recorder."""

    async def call_started(self, info: CallInfo) -> str | None:
        return None

    async def add_turn(self, call_id: str, speaker: Speaker, text: str, intent: str | None = None,
                       confidence: float | None = None) -> None:
        return None

    async def link_case(self, call_id: str, folio: str) -> None:
        return None

    async def call_ended(self, call_id: str, disposition: Disposition, transfer_target: str | None = None) -> None:
        return None


class _BoundedDict(collections.OrderedDict):  # type: ignore[type-arg]
    MAX = 256

    def __setitem__(self, key: object, value: object) -> None:
        super().__setitem__(key, value)
        while len(self) > self.MAX:
            self.popitem(last=False)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "node"


async def case_recorder(settings: Settings, node: str) -> tuple[CallRecorder, Callable[[], Awaitable[None]]]:
    """The production recorder (case bridge with a durable outbox) and the coroutine function that stops it."""
    from case_bridge.service import CaseService
    from ivr.call.recorder import EscalationRecorder
    service = CaseService.from_settings(settings)
    recorder = EscalationRecorder(service, data_dir=settings.path(settings.data_dir), name=_file_safe(node))
    await recorder.start()

    async def stop() -> None:
        await recorder.stop()
        await asyncio.to_thread(service.close)
    return recorder, stop


def rasa_dialogue(settings: Settings, menu: MenuSpec) -> tuple[DialogueFactory, Callable[[], Awaitable[None]]]:
    """The production dialogue: Rasa with the menu as fallback, and the coroutine function that closes it."""
    from ivr.dialogue.rasa import RasaDialogueFactory
    factory = RasaDialogueFactory.from_settings(settings, menu)
    return factory, factory.aclose


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        vad_threshold_db=settings.asr.vad_energy_threshold_db,
        preroll_ms=settings.asr.preroll_ms,
        vad=settings.asr.vad,
        vad_speech_threshold=settings.asr.vad_speech_threshold,
        endpoint=EndpointConfig(silence_ms_free=settings.turns.endpoint_silence_ms_free,
                                silence_ms_closed=settings.turns.endpoint_silence_ms_closed,
                                silence_ms_digits=settings.turns.endpoint_silence_ms_digits))


class Engine:
    """Shared resources of a worker plus the registry of its live calls."""

    def __init__(self, settings: Settings, metrics: EngineMetrics, *, recognizer: SpeechRecognizer,
                 synthesizer: SpeechSynthesizer, dialogue_factory: DialogueFactory, recorder: CallRecorder,
                 phrases: SessionPhrases, executor: ThreadPoolExecutor | None = None,
                 closers: list[Callable[[], Awaitable[None]]] | None = None, menu: MenuSpec | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.recognizer = recognizer
        self.synthesizer = synthesizer
        self.dialogue_factory = dialogue_factory
        self.recorder = recorder
        self.phrases = phrases
        self._executor = executor
        self.menu = menu or load_menu()
        self._closers = closers or []       # stop what create() built (recorder, dialogue client)
        self.sessions: dict[str, CallSession] = {}        # live calls by SIP Call-ID
        # How recent calls ended (bounded, for the worker's metrics and tests).
        self.dispositions: collections.OrderedDict[str, Disposition] = _BoundedDict()
        self._call_tasks: dict[str, asyncio.Task[object]] = {}
        self.closed = False

    @classmethod
    async def create(cls, settings: Settings, metrics: EngineMetrics, *,
                     dialogue_factory: DialogueFactory | None = None, recorder: CallRecorder | None = None,
                     synthesizer: SpeechSynthesizer | None = None, recognizer: SpeechRecognizer | None = None,
                     menu: MenuSpec | None = None, node: str | None = None) -> Engine:
        """Load the shared Vosk model, start TTS and prerender every fixed prompt; build the production dialogue
        and recorder unless given. Raises ModelError/TtsError/MenuError with a clear message when a resource is
        missing. `node` names this worker (outbox file); default `settings.node_name`."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        menu_path = settings.dialogue.menu_path
        menu = menu or load_menu(settings.path(menu_path) if menu_path else None)
        phrases = SessionPhrases()
        executor: ThreadPoolExecutor | None = None
        own_tts: EspeakSynthesizer | None = None
        closers: list[Callable[[], Awaitable[None]]] = []
        try:
            remote = service_recognizer(settings, stream_config(settings), metrics) if recognizer is None else None
            if remote is not None:
                recognizer, executor = remote[0], remote[1]
                log.info("recognizer ready %s", kv(engine="service", url=settings.recognition_service.url,
                                                   mode=settings.recognition_service.mode))
            if recognizer is None:
                choice = choose(settings)
                if choice.engine != "keypad":
                    executor = ThreadPoolExecutor(max_workers=settings.asr.max_parallel_decoders,
                                                  thread_name_prefix=f"asr-{choice.engine}")
                recognizer = await loop.run_in_executor(executor, build, choice, settings, stream_config(settings),
                                                        metrics, executor)
                log.info("recognizer ready %s", kv(engine=choice.engine, path=choice.model_dir or "-",
                                                   s=round(time.perf_counter() - t0, 2)))
            if settings.asr.vad == "silero":    # the speech VAD's model, shared by every call's stream
                await loop.run_in_executor(None, preload_silero)
            if synthesizer is None:
                own_tts = EspeakSynthesizer(voice=settings.tts.voice, rate=settings.tts.rate,
                                            sample_rate=settings.media.sample_rate,
                                            cache_dir=settings.path(settings.tts.cache_dir))
                await own_tts.start()
                synthesizer = own_tts
            await synthesizer.prerender([*menu.all_texts(), *phrases.all()])
            if dialogue_factory is None:
                dialogue_factory, close_dialogue = rasa_dialogue(settings, menu)
                closers.append(close_dialogue)
            if recorder is None:
                recorder, stop_recorder = await case_recorder(settings, node or settings.node_name)
                closers.append(stop_recorder)
        except BaseException:
            for close in reversed(closers):
                await close()
            if own_tts is not None:
                await own_tts.close()
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            raise
        backlog = getattr(recognizer, "backlog", None)  # the decoding pool's (in-worker) or the service client's
        if isinstance(backlog, DecodeBacklog):
            metrics.watch_backlog(backlog)
        outbox = getattr(recorder, "outbox", None)      # the production recorder's; test doubles have none
        if isinstance(outbox, Outbox):
            metrics.watch_outbox(outbox)
        engine = cls(settings, metrics, recognizer=recognizer, synthesizer=synthesizer,
                     dialogue_factory=dialogue_factory, recorder=recorder, phrases=phrases, executor=executor,
                     closers=closers, menu=menu)
        log.info("engine ready %s", kv(node=settings.node_name, s=round(time.perf_counter() - t0, 2)))
        return engine

    async def handle_call(self, leg: CallLeg) -> None:
        """Run one call's session to its end (hang-up, transfer, time limit). Never raises for call errors."""
        if self.closed:
            await leg.hangup()
            return
        call_id = leg.info.call_id
        try:
            dialogue = self.dialogue_factory(leg.info)
        except Exception:
            log.exception("dialogue factory failed, using the menu %s", kv(call_id=call_id))
            dialogue = MenuDialogue(self.menu)
        session = CallSession(leg, settings=self.settings, dialogue=dialogue,
                              recognizer=self.recognizer, synthesizer=self.synthesizer, recorder=self.recorder,
                              metrics=self.metrics, phrases=self.phrases)
        self.sessions[call_id] = session
        task = asyncio.current_task()
        if task is not None:
            self._call_tasks[call_id] = task
        # calls_active / calls_total are counted by the worker around this call (ivr/worker.py).
        try:
            self.dispositions[call_id] = await session.run()
        finally:
            self.sessions.pop(call_id, None)
            self._call_tasks.pop(call_id, None)

    async def close(self) -> None:
        """End every live call (each session tears itself down), then release TTS and the decoding pool."""
        self.closed = True
        tasks = list(self._call_tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.synthesizer.close()
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                log.exception("engine close step failed")
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

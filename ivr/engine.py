"""The engine of one IVR worker process: shared speech resources and one `CallSession` per call.

The SIP edge (`ivr.worker`) builds it once with `await Engine.create(settings, metrics)` and calls
`await engine.handle_call(leg)` for every answered call; `await engine.close()` at shutdown.
Created once per process: the Vosk model (shared by all calls), the bounded decoding pool, the TTS thread with
its prerendered prompts, the dialogue factory and the recorder.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ivr.asr import SpeechRecognizer, StreamConfig, VoskRecognizer
from ivr.dialogue import Dialogue
from ivr.endpointing import EndpointConfig
from ivr.leg import CallInfo, CallLeg
from ivr.menu_dialogue import MenuSpec, load_menu, menu_dialogue_factory
from ivr.metrics import EngineMetrics
from ivr.records import CallRecorder, Disposition, Speaker
from ivr.session import CallSession, SessionPhrases
from ivr.tts import EspeakSynthesizer, SpeechSynthesizer
from veratur.config import Settings
from veratur.logs import kv
from voice_models import locate

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


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        vad_threshold_db=settings.asr.vad_energy_threshold_db,
        preroll_ms=settings.asr.preroll_ms,
        endpoint=EndpointConfig(silence_ms_free=settings.turns.endpoint_silence_ms_free,
                                silence_ms_closed=settings.turns.endpoint_silence_ms_closed))


class Engine:
    """Shared resources of a worker plus the registry of its live calls."""

    def __init__(self, settings: Settings, metrics: EngineMetrics, *, recognizer: SpeechRecognizer,
                 synthesizer: SpeechSynthesizer, dialogue_factory: DialogueFactory, recorder: CallRecorder,
                 phrases: SessionPhrases, executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.recognizer = recognizer
        self.synthesizer = synthesizer
        self.dialogue_factory = dialogue_factory
        self.recorder = recorder
        self.phrases = phrases
        self._executor = executor
        self.sessions: dict[str, CallSession] = {}        # live calls by SIP Call-ID
        # How recent calls ended (bounded, for the worker's metrics and tests).
        self.dispositions: collections.OrderedDict[str, Disposition] = _BoundedDict()
        self._call_tasks: dict[str, asyncio.Task[object]] = {}
        self.closed = False

    @classmethod
    async def create(cls, settings: Settings, metrics: EngineMetrics, *,
                     dialogue_factory: DialogueFactory | None = None, recorder: CallRecorder | None = None,
                     synthesizer: SpeechSynthesizer | None = None, recognizer: SpeechRecognizer | None = None,
                     menu: MenuSpec | None = None) -> Engine:
        """Load the shared Vosk model, start TTS and prerender every fixed prompt. Raises ModelError/TtsError/
        MenuError with a clear message when a resource is missing."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        menu = menu or load_menu()
        phrases = SessionPhrases()
        executor = None
        own_tts: EspeakSynthesizer | None = None
        try:
            if recognizer is None:
                model_dir = locate(settings.asr.model)
                executor = ThreadPoolExecutor(max_workers=settings.asr.max_parallel_decoders,
                                              thread_name_prefix="vosk")
                model = await loop.run_in_executor(executor, VoskRecognizer.load_model, model_dir)
                recognizer = VoskRecognizer(model, executor, stream_config(settings), metrics)
                log.info("vosk model loaded %s", kv(path=model_dir, s=round(time.perf_counter() - t0, 2)))
            if synthesizer is None:
                own_tts = EspeakSynthesizer(voice=settings.tts.voice, rate=settings.tts.rate,
                                            sample_rate=settings.media.sample_rate,
                                            cache_dir=settings.path(settings.tts.cache_dir))
                await own_tts.start()
                synthesizer = own_tts
            await synthesizer.prerender([*menu.all_texts(), *phrases.all()])
        except BaseException:
            if own_tts is not None:
                await own_tts.close()
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            raise
        engine = cls(settings, metrics, recognizer=recognizer, synthesizer=synthesizer,
                     dialogue_factory=dialogue_factory or menu_dialogue_factory(menu),
                     recorder=recorder or NullRecorder(), phrases=phrases, executor=executor)
        log.info("engine ready %s", kv(node=settings.node_name, s=round(time.perf_counter() - t0, 2)))
        return engine

    async def handle_call(self, leg: CallLeg) -> None:
        """Run one call's session to its end (hang-up, transfer, time limit). Never raises for call errors."""
        if self.closed:
            await leg.hangup()
            return
        call_id = leg.info.call_id
        session = CallSession(leg, settings=self.settings, dialogue=self.dialogue_factory(leg.info),
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
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

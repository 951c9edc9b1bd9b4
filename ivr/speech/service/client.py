"""The worker's side of the recognition service: a `Decoder` whose decoding happens in the service.

`RemoteDecoder` runs on the engine's pool thread like a local decoder (the stream calls it there), so the
per-frame audio path is untouched: the stream already sends only speech (its VAD gates the audio) in batches.
Against the built-in service a grammar switch is one config message; against a plain vosk-server
(`protocol="vosk"`), which applies a config only before the first audio, it is a new connection.

`RemoteRecognizer` hands out streams and keeps a breaker: when the service cannot be reached, new calls start
keypad-only at once (no connect timeout per call) and the next attempt waits a growing backoff, so a dead or
restarting service costs callers nothing but speech.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Literal

from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from foundation.config import Settings
from foundation.logs import kv
from ivr.metrics import EngineMetrics
from ivr.speech.backlog import BacklogSnapshot, DecodeBacklog, ServiceLoad
from ivr.speech.expect import Expect
from ivr.speech.recognizer import Decoder, NoSpeechDecoder, RecognizeStream, StreamConfig, grammar_for
from ivr.speech.service.protocol import (
    DROP_MESSAGE,
    EOF_MESSAGE,
    RESET_MESSAGE,
    ServerReply,
    config_message,
    parse_reply,
    reset_message,
)

log = logging.getLogger("ivr.speech.service.client")

Protocol = Literal["veratur", "vosk"]
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class ServiceUnavailable(ConnectionError):
    """The recognition service cannot be reached or stopped answering."""


class RemoteDecoder:
    def __init__(self, url: str, sample_rate: int, *, protocol: Protocol = "veratur", engine: str | None = None,
                 connect_timeout_s: float = 1.0, reply_timeout_s: float = 15.0,
                 load: ServiceLoad | None = None, max_wait_ms: int = 0) -> None:
        self.url = url
        self._load = load
        self.max_wait_ms = max_wait_ms if protocol == "veratur" else 0
        self.dropped = False           # the last final was dropped by the service undecoded (the stream reads it)
        self._ended_at: float | None = None    # monotonic end of the utterance the next final is for
        self.sample_rate = sample_rate
        self.protocol = protocol
        self.engine = engine if protocol == "veratur" else None
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._phrases: list[str] | None = None
        self._expect: Expect | None = None
        self._ws: ClientConnection | None = None
        self._partial = ""
        self._connect()          # now, on the pool thread, while the greeting plays

    # -- the Decoder seam -----------------------------------------------------------------------------------
    def accept(self, pcm: bytes) -> str | None:
        reply = self._parse(self._ask(pcm))
        if reply.text is not None:
            self._partial = ""
            return reply.text
        self._partial = reply.partial or ""
        return None

    def partial(self) -> str:
        return self._partial

    def final(self) -> tuple[str, float | None]:
        self._partial = ""
        if self._ws is None:
            return "", None
        ended_at, self._ended_at = self._ended_at, None
        if self.max_wait_ms and ended_at is not None:
            # what is left of the bound: the service drops the final rather than start it later than that
            left_ms = self.max_wait_ms - 1000 * (time.monotonic() - ended_at)
            message = DROP_MESSAGE if left_ms <= 0 else reset_message(int(left_ms))
        else:
            message = RESET_MESSAGE
        reply = self._parse(self._ask(message))
        self.dropped = reply.dropped
        return reply.text or "", reply.confidence

    def utterance_ended(self, at: float) -> None:
        """The stream tells when the utterance it will ask the final of ended (time.monotonic())."""
        self._ended_at = at

    def reset(self) -> None:
        self._partial = ""
        if self._ws is not None:
            self._ask(RESET_MESSAGE)          # the reply is the dropped utterance

    def drop(self) -> None:
        """Forget the utterance without decoding it (the built-in service skips the decode; vosk-server, which
        has no such message, finishes it as a reset: a Vosk final is cheap)."""
        self._partial = ""
        if self._ws is not None:
            self._parse(self._ask(DROP_MESSAGE if self.protocol == "veratur" else RESET_MESSAGE))

    def _parse(self, message: str | bytes) -> ServerReply:
        reply = parse_reply(message)
        if reply.backlog is not None and self._load is not None:
            b = reply.backlog
            self._load.update(BacklogSnapshot(b.waiting, b.threads, b.decode_s))
        return reply

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        wanted = [p.lower() for p in phrases] if phrases else None
        if wanted == self._phrases:
            return
        self._phrases = wanted
        self._reconfigure()

    def set_expect(self, expect: Expect) -> None:
        if expect == self._expect:
            return
        self._expect = expect
        if self.protocol == "veratur":
            self._reconfigure()
        else:                                  # a plain vosk-server knows grammars only, not expectations
            self.set_phrases(grammar_for(expect))

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.send(EOF_MESSAGE)
                ws.close()
            except Exception:
                pass

    # -- connection -----------------------------------------------------------------------------------------
    def _config(self) -> str:
        expect = None
        if self.protocol == "veratur" and self._expect is not None:
            e = self._expect
            expect = {"kind": e.kind, "phrases": list(e.phrases), "max_digits": e.max_digits,
                      "terminator": e.terminator}
        return config_message(self.sample_rate, self._phrases, engine=self.engine, expect=expect)

    def _connect(self) -> None:
        try:
            self._ws = connect(self.url, open_timeout=self.connect_timeout_s, close_timeout=0.5,
                               max_size=1 << 20, compression=None)
            # one small request, one small reply: without TCP_NODELAY each round trip waits for a delayed ACK
            self._ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ws.send(self._config())
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._ws = None
            raise ServiceUnavailable(f"{self.url}: {exc}") from exc

    def _reconfigure(self) -> None:
        if self._ws is None:
            return
        if self.protocol == "veratur":
            try:
                self._ws.send(self._config())
            except (OSError, WebSocketException) as exc:
                raise ServiceUnavailable(str(exc)) from exc
        else:                                  # vosk-server: a grammar takes effect on a new stream only
            self.close()
            self._connect()

    def _ask(self, message: str | bytes) -> str | bytes:
        if self._ws is None:
            self._connect()
        assert self._ws is not None
        # a batch of audio may be long (the stream catches up after a stall): allow twice real time for it
        audio_s = len(message) / (2 * self.sample_rate) if isinstance(message, bytes) else 0.0
        try:
            self._ws.send(message)
            return self._ws.recv(timeout=self.reply_timeout_s + 2 * audio_s)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._ws = None
            raise ServiceUnavailable(f"{self.url}: {exc}") from exc


class RemoteRecognizer:
    """The `SpeechRecognizer` over a recognition service (the node's own, or any vosk-server)."""

    def __init__(self, url: str, executor: Executor, config: StreamConfig, *, protocol: Protocol = "veratur",
                 engine: str | None = None, metrics: EngineMetrics | None = None,
                 reply_timeout_s: float = 15.0, service_threads: int = 2, max_wait_ms: int = 0) -> None:
        self.url = url
        self.max_wait_ms = max_wait_ms
        self.reply_timeout_s = reply_timeout_s
        self.protocol = protocol
        self.engine = engine
        self._executor = executor
        self._config = config
        self._metrics = metrics
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        # this worker's finals at the service (their decode is the service's pool of `service_threads`), and what
        # the service last reported of everyone's: the estimate takes the larger
        self.backlog = DecodeBacklog(service_threads)
        self.backlog.service = ServiceLoad()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._retry_at

    def stream(self, call_id: str, sample_rate: int) -> RecognizeStream:
        def factory() -> Decoder:
            if not self.available:
                return NoSpeechDecoder()
            try:
                decoder = RemoteDecoder(self.url, sample_rate, protocol=self.protocol, engine=self.engine,
                                        reply_timeout_s=self.reply_timeout_s, load=self.backlog.service,
                                        max_wait_ms=self.max_wait_ms)
            except ServiceUnavailable as exc:
                self._failed(call_id, exc)
                raise
            with self._lock:
                if self._failures:
                    log.info("recognition service back %s", kv(url=self.url, after_failures=self._failures))
                self._failures, self._retry_at = 0, 0.0
            return decoder

        s = RecognizeStream(factory, self._executor, self._config, sample_rate=sample_rate, call_id=call_id,
                            metrics=self._metrics, backlog=self.backlog)
        s.start()
        return s

    def _failed(self, call_id: str, exc: Exception) -> None:
        with self._lock:
            delay = BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
            self._failures += 1
            self._retry_at = time.monotonic() + delay
        log.warning("recognition service unreachable: keypad only %s",
                    kv(call_id=call_id, url=self.url, retry_in_s=delay, error=str(exc)[:120]))


def describe(recognizer: Any) -> str:
    """For the start-up screen."""
    if isinstance(recognizer, RemoteRecognizer):
        return f"service {recognizer.url} ({recognizer.protocol})"
    return type(recognizer).__name__


def service_recognizer(settings: Settings, config: StreamConfig,
                       metrics: EngineMetrics | None = None) -> tuple[RemoteRecognizer, ThreadPoolExecutor] | None:
    """The worker's recognizer when `recognition_service.mode` is builtin or external (None: decode in-worker),
    with the pool its streams wait in: one thread per call, since a remote decode only waits on a socket."""
    cfg = settings.recognition_service
    if cfg.mode == "in_worker":
        return None
    pool = ThreadPoolExecutor(max_workers=settings.sip.max_calls_per_worker + 1, thread_name_prefix="asr-remote")
    engine = settings.asr.engine if settings.asr.engine in ("vosk", "whisper") else None
    recognizer = RemoteRecognizer(cfg.url, pool, config, protocol="veratur" if cfg.mode == "builtin" else "vosk",
                                  engine=engine, metrics=metrics, service_threads=cfg.threads,
                                  max_wait_ms=settings.asr.max_wait_keypad_ms)
    return recognizer, pool

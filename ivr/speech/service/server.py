"""The recognition service: many streams over WebSocket, each model loaded once, decoding in a bounded pool.

Each connection is one stream with its own `Decoder` (a Vosk recognizer, a Whisper utterance buffer); messages of
one stream are decoded in order, one at a time, so a slow stream only waits for itself. The pool is sized to the
cores: more threads than cores only makes every stream slower. A stream over the limit is refused at once
(close code 1013, try again later) rather than queued behind the others.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from foundation.logs import kv
from foundation.vocabulary import EXPECT_KINDS
from ivr.speech.backlog import DecodeBacklog
from ivr.speech.expect import Expect
from ivr.speech.recognizer import Decoder, grammar_for
from ivr.speech.service.protocol import (
    MAX_MESSAGE_BYTES,
    ClientConfig,
    ProtocolError,
    final_message,
    parse_text,
    with_backlog,
)

log = logging.getLogger("ivr.speech.service")

DecoderFactory = Callable[[int], Decoder]
"""Builds one stream's decoder at a sample rate (runs in the pool: building a Vosk recognizer takes ~130 ms)."""

IDLE_TIMEOUT_S = 120.0       # a stream silent this long is closed (a worker streams only speech, but pings)
TRY_AGAIN_LATER = 1013
PARTIAL_EVERY_MS = 200


@dataclass
class ServiceStats:
    streams_open: int = 0
    streams_total: int = 0
    streams_refused: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0
    errors: int = 0
    finals_dropped: int = 0          # utterances a client dropped without a decode ({"drop": 1}: overload)
    by_engine: dict[str, int] = field(default_factory=dict)


class RecognitionServer:
    def __init__(self, engines: dict[str, DecoderFactory], *, default_engine: str, threads: int,
                 max_streams: int, default_sample_rate: int = 8000) -> None:
        if default_engine not in engines:
            raise ValueError(f"default engine {default_engine!r} is not loaded")
        self.engines = engines
        self.default_engine = default_engine
        self.max_streams = max_streams
        self.default_sample_rate = default_sample_rate
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asr")
        self.backlog = DecodeBacklog(threads)       # finals waiting in the pool, reported to extended clients
        self.stats = ServiceStats()
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (0 picks a free one)."""
        self._server = await serve(self._handle, host, port, max_size=MAX_MESSAGE_BYTES, compression=None,
                                   ping_interval=20, ping_timeout=20)
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _handle(self, ws: ServerConnection) -> None:
        if self.stats.streams_open >= self.max_streams:
            self.stats.streams_refused += 1
            await ws.close(TRY_AGAIN_LATER, "too many streams")
            return
        self.stats.streams_open += 1
        self.stats.streams_total += 1
        stream = _Stream(self)
        try:
            await stream.serve(ws)
        except ConnectionClosed:
            pass
        except ProtocolError as exc:
            await ws.close(1008, str(exc)[:100])
        except Exception:
            self.stats.errors += 1
            log.exception("recognition stream failed %s", kv(peer=_peer(ws)))
            await ws.close(1011, "decoder failed")
        finally:
            self.stats.streams_open -= 1
            stream.close()


class _Stream:
    def __init__(self, server: RecognitionServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.sample_rate = server.default_sample_rate
        self.engine = server.default_engine
        self.phrases: list[str] | None = None
        self.phrases_given = False             # the client set a phrase list itself (plain vosk-server clients)
        self.expect: Expect | None = None
        self.decoder: Decoder | None = None
        self._partial = ""
        self._since_partial = 0
        self.extended = False                  # the client speaks the extensions: replies carry the backlog
        self._finals = 0

    def _reply(self, message: str) -> str:
        if not self.extended:
            return message
        snap = self.server.backlog.snapshot()
        return with_backlog(message, snap.waiting, snap.pool_size, snap.recent_decode_s)

    async def serve(self, ws: ServerConnection) -> None:
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), IDLE_TIMEOUT_S)
            except TimeoutError:
                await ws.close(1000, "idle")
                return
            if isinstance(message, bytes):
                if len(message) % 2:
                    raise ProtocolError("audio: whole 16-bit samples")
                await ws.send(self._reply(await self._run(self._accept, message)))
                continue
            kind, config = parse_text(message)
            if kind == "config":
                assert config is not None
                self.extended = self.extended or config.engine is not None or config.expect is not None
                await self._run(self._configure, config)
                continue
            if kind == "drop":
                await ws.send(self._reply(await self._run(self._drop)))
                continue
            self._finals += 1
            key = (id(self), self._finals)
            self.server.backlog.enqueue(key)
            spent: float | None = None
            try:
                max_wait = config.max_wait_ms if config is not None else None
                reply, spent = await self._run(self._timed_final, time.monotonic(), max_wait)
            finally:
                self.server.backlog.done(key, spent)      # the decode's own time, not its wait in the pool
            await ws.send(self._reply(reply))
            if kind == "eof":
                await ws.close(1000, "eof")
                return

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.loop.run_in_executor(self.server.pool, fn, *args)

    # -- on a pool thread -----------------------------------------------------------------------------------
    def _decoder(self) -> Decoder:
        if self.decoder is None:
            self.decoder = self.server.engines[self.engine](self.sample_rate)
            self.server.stats.by_engine[self.engine] = self.server.stats.by_engine.get(self.engine, 0) + 1
            self._apply_answer()
        return self.decoder

    def _apply_answer(self) -> None:
        """Tell the decoder what answer comes next: a free-text decoder (Whisper) maps its text onto the
        expectation; a grammar decoder (Vosk) takes the client's phrase list or, when the client sent only an
        expectation (the worker's RemoteDecoder does), the grammar that expectation implies."""
        dec = self.decoder
        if dec is None:
            return
        set_expect = getattr(dec, "set_expect", None)
        if set_expect is not None:
            if self.phrases:
                dec.set_phrases(self.phrases)
            if self.expect is not None:
                set_expect(self.expect)
        elif self.phrases_given:
            dec.set_phrases(self.phrases)
        else:
            dec.set_phrases(grammar_for(self.expect) if self.expect is not None else None)

    def _configure(self, config: ClientConfig) -> None:
        rebuild = False
        if config.sample_rate and config.sample_rate != self.sample_rate:
            self.sample_rate, rebuild = config.sample_rate, True
        if config.engine and config.engine != self.engine:
            if config.engine not in self.server.engines:
                raise ProtocolError(f"engine {config.engine!r} is not loaded here")
            self.engine, rebuild = config.engine, True
        if rebuild:
            self.close()
        if config.phrases_given:
            self.phrases, self.phrases_given = config.phrase_list, bool(config.phrase_list)
        if config.expect is not None:
            self.expect = _expect(config.expect)
        if config.phrases_given or config.expect is not None:
            self._apply_answer()                              # grammar switch, no reconnect

    def _accept(self, pcm: bytes) -> str:
        dec = self._decoder()
        t0 = time.perf_counter()
        segment = dec.accept(pcm)
        self._since_partial += len(pcm)
        if segment is not None:
            reply = final_message(segment, None)
            self._partial, self._since_partial = "", 0
        else:
            # A partial re-decodes the lattice: recompute it every PARTIAL_EVERY_MS of audio, not per message
            # (clients send 20-100 ms chunks; vosk-server recomputes it every time).
            if self._since_partial >= self.sample_rate * 2 * PARTIAL_EVERY_MS // 1000:
                self._partial, self._since_partial = dec.partial(), 0
            reply = _partial(self._partial)
        self.server.stats.decode_s += time.perf_counter() - t0
        self.server.stats.audio_s += len(pcm) / (2 * self.sample_rate)
        return reply

    def _timed_final(self, asked_at: float, max_wait_ms: int | None) -> tuple[str, float | None]:
        if max_wait_ms is not None and (time.monotonic() - asked_at) * 1000 > max_wait_ms:
            return self._drop(), None          # the caller was asked for keys by now: do not delay the others
        t0 = time.perf_counter()
        reply = self._final()
        return reply, time.perf_counter() - t0

    def _final(self) -> str:
        self._partial, self._since_partial = "", 0
        if self.decoder is None:
            return final_message("", None)
        t0 = time.perf_counter()
        text, confidence = self.decoder.final()
        self.server.stats.decode_s += time.perf_counter() - t0
        return final_message(text, confidence)

    def _drop(self) -> str:
        self._partial, self._since_partial = "", 0
        if self.decoder is not None:
            self.decoder.reset()
        self.server.stats.finals_dropped += 1
        body = json.loads(final_message("", None))
        body["dropped"] = True
        return json.dumps(body)

    def close(self) -> None:
        if self.decoder is not None:
            try:
                self.decoder.close()
            finally:
                self.decoder = None


def _partial(text: str) -> str:
    return json.dumps({"partial": text}, ensure_ascii=False)


def _expect(raw: dict[str, Any]) -> Expect:
    kind = raw.get("kind", "free")
    phrases = raw.get("phrases") or ()
    try:
        return Expect(kind=kind if kind in EXPECT_KINDS else "free",
                      phrases=tuple(str(p)[:200] for p in phrases)[:2000] if isinstance(phrases, list) else (),
                      max_digits=max(1, min(int(raw.get("max_digits", 1)), 32)),
                      terminator=str(raw.get("terminator", "#"))[:1] or "#")
    except (TypeError, ValueError) as exc:
        raise ProtocolError("expect: bad value") from exc


def _peer(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except Exception:
        return "-"

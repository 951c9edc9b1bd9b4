"""Decode admission: the backlog of finals a pool holds and its wait estimate, through the real `RecognizeStream`
with a slow decoder behind the `Decoder` seam (a bounded pool of one thread), and through the recognition service
over real WebSockets (its backlog report, `{"drop": 1}` skipping the decode)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.sync.client import connect

from foundation.config import Settings
from ivr.call.overload import FREE_KEYS, key_sentences, keypad_question, late_final
from ivr.engine import stream_config
from ivr.speech.backlog import BacklogSnapshot, DecodeBacklog, ServiceLoad
from ivr.speech.expect import Expect
from ivr.speech.recognizer import EndOfSpeech, Final, RecognizeStream
from ivr.speech.service.client import RemoteRecognizer
from ivr.speech.service.protocol import DROP_MESSAGE, RESET_MESSAGE, parse_reply, parse_text
from ivr.speech.service.server import RecognitionServer
from testkit.fakes import frames_of
from testkit.sounds import silence, speech

pytestmark = pytest.mark.timeout(60)


class SlowDecoder:
    """A decoder whose final takes `final_s` of a pool thread (a Whisper decode on a busy core)."""

    def __init__(self, text: str = "hola", final_s: float = 0.3) -> None:
        self.text = text
        self.final_s = final_s
        self.finals = 0
        self.resets = 0
        self.drops = 0
        self.audio = 0
        self.busy = threading.Event()

    def accept(self, pcm: bytes) -> str | None:
        self.audio += len(pcm)
        return None

    def partial(self) -> str:
        return ""

    def final(self) -> tuple[str, float | None]:
        self.busy.set()
        time.sleep(self.final_s)
        self.finals += 1
        self.audio = 0
        return self.text, 0.9

    def reset(self) -> None:
        self.resets += 1
        self.audio = 0

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        return None

    def close(self) -> None:
        return None


# ---- the estimate -------------------------------------------------------------------------------------------

def test_estimate_is_recent_decode_seconds_times_waiting_over_pool_size() -> None:
    now = [0.0]
    backlog = DecodeBacklog(2, clock=lambda: now[0])
    assert backlog.estimate_wait_s() == 0.0                # nothing measured yet: no guess
    for key in ("a", "b", "c", "d"):
        backlog.enqueue(key)
    backlog.done("a", 0.4)
    backlog.done("b", 0.8)
    snap = backlog.snapshot()
    assert snap == BacklogSnapshot(waiting=2, pool_size=2, recent_decode_s=pytest.approx(0.6))
    assert backlog.estimate_wait_s() == pytest.approx(0.6 * 2 / 2)
    backlog.drop("c")
    assert backlog.waiting == 1 and backlog.dropped_total == 1
    backlog.drop("c")                                       # twice: counted once
    assert backlog.dropped_total == 1
    backlog.forget(lambda key: key == "d")
    assert backlog.waiting == 0 and backlog.estimate_wait_s() == 0.0


def test_the_service_report_counts_when_it_is_larger_and_fresh() -> None:
    backlog = DecodeBacklog(2)
    backlog.enqueue("mine")
    backlog.done("x", 0.5)                                  # local: 0.5 s x 1 waiting / 2 = 0.25 s
    load = ServiceLoad()
    backlog.service = load
    assert backlog.estimate_wait_s() == pytest.approx(0.25)
    load.update(BacklogSnapshot(waiting=9, pool_size=2, recent_decode_s=0.5))   # the service: 9 others waiting
    assert backlog.estimate_wait_s() == pytest.approx(0.5 * 10 / 2)
    load.update(BacklogSnapshot(waiting=9, pool_size=2, recent_decode_s=0.5), at=time.monotonic() - 60)
    assert backlog.estimate_wait_s() == pytest.approx(0.25)   # a report a minute old is not used


def test_late_final_holds_then_asks_for_keys() -> None:
    bounds = dict(hold_ms=1500, keypad_ms=5000)
    assert late_final(waited_s=0.2, estimate_s=0.9, **bounds) is None
    assert late_final(waited_s=0.2, estimate_s=2.0, **bounds) == "hold"       # predicted at the end of speech
    assert late_final(waited_s=1.6, estimate_s=0.0, **bounds) == "hold"       # the estimate was wrong: waited
    assert late_final(waited_s=0.0, estimate_s=7.0, **bounds) == "keypad"
    assert late_final(waited_s=5.1, estimate_s=0.5, **bounds) == "keypad"
    assert late_final(waited_s=9.0, estimate_s=9.0, hold_ms=0, keypad_ms=0) is None   # both off
    assert late_final(waited_s=9.0, estimate_s=0.0, hold_ms=1500, keypad_ms=0) == "hold"


def test_the_keys_come_from_the_prompt_else_from_its_expected_answer() -> None:
    greeting = ("Bienvenido a Veratur, el portal telefónico de Veracruz. Dígame qué necesita, o marque uno para "
                "turismo, dos para trámites, tres para el estado de su trámite, o cero para un asesor.")
    assert key_sentences(greeting) == ["Marque uno para turismo, dos para trámites, tres para el estado de su "
                                       "trámite, o cero para un asesor."]
    folio = ("Dígame el número de folio de su trámite, dígito por dígito, o márquelo en el teclado y termine con la "
             "tecla gato.")
    lead, menu = "Disculpe.", "Marque 1 para turismo."
    assert keypad_question(Expect(kind="digits", max_digits=8), folio, lead=lead, key_menu=menu) == (
        lead, "Márquelo en el teclado y termine con la tecla gato.")
    assert keypad_question(Expect(kind="yes_no"), "¿Es correcto?", lead=lead, key_menu=menu) == (
        lead, "Marque 1 para sí o 2 para no.")
    assert keypad_question(Expect(kind="digits", max_digits=4), "Dígame su NIP.", lead=lead, key_menu=menu) == (
        lead, "Marque los dígitos en el teclado y termine con la tecla gato.")
    # a menu said in words gets the key menu; an open question the main menu said as such (tests/engine/
    # test_overload_keys.py has each kind against the dialogue's own prompts and key handling)
    assert keypad_question(Expect(kind="menu"), "Diga turismo o trámites.", lead=lead, key_menu=menu) == (lead, menu)
    assert keypad_question(Expect(kind="free"), "¿En qué le ayudo?", lead=lead, key_menu=menu) == (lead, FREE_KEYS)


def test_config_refuses_a_keypad_bound_under_the_hold_bound() -> None:
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="max_wait_keypad_ms"):
        Settings(asr={"max_wait_ms": 3000, "max_wait_keypad_ms": 2000})
    Settings(asr={"max_wait_ms": 0, "max_wait_keypad_ms": 2000})         # hold off, keypad on: fine
    with pytest.raises(ValidationError):
        Settings(asr={"max_wait_ms": -1})


def test_protocol_backlog_extension_and_drop_message() -> None:
    reply = parse_reply('{"partial": "", "backlog": {"waiting": 3, "threads": 2, "decode_s": 0.41}}')
    assert reply.backlog is not None and (reply.backlog.waiting, reply.backlog.threads) == (3, 2)
    for bad in ('"x"', '{"waiting": -1, "threads": 2, "decode_s": 1}', '{"waiting": 1, "threads": 0, "decode_s": 1}',
                '{"waiting": "many", "threads": 2, "decode_s": 1}', '{"waiting": 1, "threads": 2}'):
        assert parse_reply('{"text": "hola", "backlog": ' + bad + '}').backlog is None     # ignored, never fatal
    assert parse_reply('{"text": "hola"}').backlog is None
    assert parse_text('{"drop" : 1}') == ("drop", None)


# ---- the stream over a slow decoder in a bounded pool ---------------------------------------------------------

def utterance() -> bytes:
    return silence(200) + speech("안녕하세요") + silence(1200)


async def push(stream: RecognizeStream, pcm: bytes) -> None:
    for i, frame in enumerate(frames_of(pcm, start=stream._now)):
        stream.push_frame(frame)
        if i % 10 == 9:
            await asyncio.sleep(0)


async def next_of(stream: RecognizeStream, kind: type, limit_s: float = 20.0) -> Any:
    async with asyncio.timeout(limit_s):
        while True:
            event = await stream.get()
            if isinstance(event, kind):
                return event


async def test_streams_of_one_pool_see_each_others_finals_waiting_and_a_dropped_one_is_not_decoded() -> None:
    config = stream_config(Settings())
    backlog = DecodeBacklog(1)
    decoders = [SlowDecoder(f"uno{i}", final_s=0.4) for i in range(3)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        streams = [RecognizeStream(lambda d=d: d, pool, config, sample_rate=8000, call_id=f"s{i}", backlog=backlog)
                   for i, d in enumerate(decoders)]
        for s in streams:
            s.start()
        try:
            # first, one final measured: the pool's recent decode time is known
            await push(streams[0], utterance())
            assert (await next_of(streams[0], Final)).text == "uno0"
            assert backlog.waiting == 0 and backlog.snapshot().recent_decode_s >= 0.4
            # three callers end their utterance at once: the pool of one decodes them in turn
            await asyncio.gather(*(push(s, utterance()) for s in streams))
            ends = [await next_of(s, EndOfSpeech) for s in streams]
            assert backlog.waiting == 3
            estimate = streams[2].final_wait_estimate_s()
            assert estimate >= 3 * 0.4                         # ~0.4 s each, one thread
            # the third gives up before its decode starts: no decode, no Final, the pool is free sooner
            assert streams[2].drop_final(ends[2].seq)
            assert not streams[2].drop_final(ends[2].seq)       # once
            assert backlog.waiting == 2
            assert (await next_of(streams[0], Final)).text == "uno0"
            assert (await next_of(streams[1], Final)).text == "uno1"
            await asyncio.sleep(0.6)
            assert streams[2].get_nowait() is None
            assert decoders[2].finals == 0 and decoders[2].resets >= 1
            assert backlog.waiting == 0 and streams[2].finals_dropped == 1
            # the dropped stream goes on: its next utterance is decoded
            await push(streams[2], utterance())
            assert (await next_of(streams[2], Final)).text == "uno2"
            assert not streams[2].drop_final(streams[2].utterances_ended)    # already out
        finally:
            for s in streams:
                await s.aclose()
        assert backlog.waiting == 0


async def test_the_per_frame_path_does_not_wait_for_a_stuck_decode() -> None:
    config = stream_config(Settings())
    decoder = SlowDecoder(final_s=2.0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        stream = RecognizeStream(lambda: decoder, pool, config, sample_rate=8000, call_id="stuck")
        stream.start()
        try:
            await push(stream, utterance())
            await next_of(stream, EndOfSpeech)
            await asyncio.to_thread(decoder.busy.wait, 5)       # the final is decoding on the only thread
            frames = frames_of(utterance(), start=stream._now)
            t0 = time.perf_counter()
            for frame in frames:
                stream.push_frame(frame)
            per_frame_us = (time.perf_counter() - t0) / len(frames) * 1e6
            assert per_frame_us < 2000, per_frame_us     # VAD + a queue put; the 2 s decode is elsewhere
            assert stream.backlog.waiting >= 1
        finally:
            await stream.aclose()


# ---- the service: its backlog reaches the worker, a late or dropped final is not decoded ---------------------

async def test_the_service_reports_its_backlog_and_drops_a_final_that_waited_past_max_wait() -> None:
    decoders: list[SlowDecoder] = []

    def factory(rate: int) -> SlowDecoder:
        decoders.append(SlowDecoder(f"svc{len(decoders)}", final_s=0.4))
        return decoders[-1]

    server = RecognitionServer({"vosk": factory}, default_engine="vosk", threads=1, max_streams=8)  # type: ignore[dict-item]
    port = await server.start("127.0.0.1", 0)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            # the worker's client as service_recognizer() builds it: the keypad bound goes to the service
            recognizer = RemoteRecognizer(f"ws://127.0.0.1:{port}", pool, stream_config(Settings()),
                                          engine="vosk", service_threads=1, reply_timeout_s=30, max_wait_ms=600)
            streams = [recognizer.stream(f"r{i}", 8000) for i in range(3)]
            try:
                await push(streams[0], utterance())
                assert (await next_of(streams[0], Final)).text == "svc0"
                load = recognizer.backlog.service
                assert load is not None
                report = load.latest()
                assert report is not None and report.pool_size == 1 and report.recent_decode_s >= 0.4
                # three finals at once on a service of one thread (0.4 s each): the third would start after 0.8 s
                await asyncio.gather(*(push(s, utterance()) for s in streams))
                for s in streams:
                    await next_of(s, EndOfSpeech)
                assert recognizer.backlog.waiting == 3
                assert streams[0].final_wait_estimate_s() >= 3 * 0.4 - 0.05
                finals = await asyncio.gather(*(next_of(s, Final) for s in streams))
                late = [f for f in finals if f.dropped]
                assert len(late) == 1 and late[0].text == ""               # the one that waited > 0.6 s
                assert all(f.text.startswith("svc") for f in finals if not f.dropped)
                assert server.stats.finals_dropped == 1
                assert sum(d.finals for d in decoders) == 3                 # 1 + 2: never the dropped one
                assert recognizer.backlog.waiting == 0
            finally:
                for s in streams:
                    await s.aclose()
    finally:
        await server.close()


async def test_a_drop_message_forgets_the_utterance_undecoded() -> None:
    decoder = SlowDecoder(final_s=0.2)
    server = RecognitionServer({"vosk": lambda rate: decoder}, default_engine="vosk", threads=1,  # type: ignore[dict-item]
                               max_streams=2)
    port = await server.start("127.0.0.1", 0)

    def client() -> list[dict[str, Any]]:
        replies = []
        with connect(f"ws://127.0.0.1:{port}") as ws:
            ws.send(json.dumps({"config": {"sample_rate": 8000, "engine": "vosk"}}))
            ws.send(utterance())
            replies.append(json.loads(ws.recv()))
            ws.send(DROP_MESSAGE)
            replies.append(json.loads(ws.recv()))
            ws.send(utterance())
            replies.append(json.loads(ws.recv()))
            ws.send(RESET_MESSAGE)
            replies.append(json.loads(ws.recv()))
        return replies

    try:
        replies = await asyncio.to_thread(client)
    finally:
        await server.close()
    assert replies[1] == {"text": "", "result": [], "dropped": True, "backlog": replies[1]["backlog"]}
    assert replies[3]["text"] == "hola" and "dropped" not in replies[3]
    assert decoder.finals == 1 and decoder.resets == 1
    assert all(r["backlog"]["threads"] == 1 for r in replies)     # an extended client gets the backlog each time

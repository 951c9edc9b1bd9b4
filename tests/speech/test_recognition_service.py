"""The node's recognition service with the real Vosk model (Korean test model), over real WebSockets:
a plain vosk-server protocol client gets results; the worker's RemoteRecognizer gets partials and finals,
switches grammar without reconnecting, holds 20 streams at once, falls back to keypad when the service dies
and gets speech again once it is back; and it works against a server that speaks only the base protocol."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import connect

from foundation.config import Settings
from foundation.paths import REPO_ROOT
from ivr.engine import stream_config
from ivr.speech.expect import Expect
from ivr.speech.recognizer import Final, Partial, RecognizeStream, VoskDecoder, VoskRecognizer
from ivr.speech.service.client import RemoteRecognizer
from ivr.speech.service.protocol import EOF_MESSAGE, RESET_MESSAGE
from ivr.speech.service.server import RecognitionServer
from testkit.fakes import frames_of
from testkit.sounds import silence, speech
from voice_models import locate

pytestmark = pytest.mark.timeout(300)

HELLO = "안녕하세요 반갑습니다"
MENU = ("안녕하세요", "감사합니다", "상담원")


@pytest.fixture(scope="module")
def vosk_model() -> Any:
    return VoskRecognizer.load_model(locate("ko-test"))


@pytest.fixture(scope="module")
def hello_pcm() -> bytes:
    return silence(300) + speech(HELLO) + silence(1200)


@pytest.fixture(scope="module")
def thanks_pcm() -> bytes:
    return silence(300) + speech("감사합니다") + silence(900)


@pytest.fixture
async def service(vosk_model: Any) -> AsyncIterator[tuple[RecognitionServer, str]]:
    server = RecognitionServer({"vosk": lambda rate: VoskDecoder(vosk_model, rate)}, default_engine="vosk",
                               threads=2, max_streams=32)
    port = await server.start("127.0.0.1", 0)
    yield server, f"ws://127.0.0.1:{port}"
    await server.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=24, thread_name_prefix="asr-client") as ex:
        yield ex


def remote(url: str, pool: ThreadPoolExecutor, protocol: str = "veratur") -> RemoteRecognizer:
    # A generous reply timeout: the suite runs beside Rasa and other real peers on 2 cores, where a decode of the
    # Korean test model can queue behind others for many seconds (production keeps the default).
    return RemoteRecognizer(url, pool, stream_config(Settings()), protocol=protocol,  # type: ignore[arg-type]
                            reply_timeout_s=90.0)


async def push(stream: RecognizeStream, pcm: bytes) -> None:
    for i, frame in enumerate(frames_of(pcm, start=stream._now)):
        stream.push_frame(frame)
        if i % 5 == 4:
            await asyncio.sleep(0.002)


async def final_of(stream: RecognizeStream, limit_s: float = 150.0) -> tuple[Final, list[Any]]:
    events: list[Any] = []
    async with asyncio.timeout(limit_s):
        while True:
            events.append(await stream.get())
            if isinstance(events[-1], Final):
                return events[-1], events


def plain_client(url: str, pcm: bytes, phrases: list[str] | None = None) -> list[dict[str, Any]]:
    """A vosk-server client as res_speech_vosk is one: config, audio in 8000-byte chunks, eof."""
    replies = []
    with connect(url) as ws:
        config: dict[str, Any] = {"sample_rate": 8000}
        if phrases:
            config["phrase_list"] = phrases
        ws.send(json.dumps({"config": config}))
        for i in range(0, len(pcm), 8000):
            ws.send(pcm[i:i + 8000])
            replies.append(json.loads(ws.recv()))
        ws.send(EOF_MESSAGE)
        replies.append(json.loads(ws.recv()))
    return replies


async def test_a_plain_vosk_server_client_gets_partials_and_a_final(service: tuple[RecognitionServer, str],
                                                                   hello_pcm: bytes) -> None:
    _, url = service
    replies = await asyncio.to_thread(plain_client, url, hello_pcm)
    assert all(set(r) & {"partial", "text"} for r in replies)
    assert any(r.get("partial") for r in replies[:-1])
    assert "text" in replies[-1] and " ".join(r.get("text", "") for r in replies).strip()
    assert all("word" in w for r in replies if "result" in r for w in r["result"])


async def test_phrase_list_restricts_the_result(service: tuple[RecognitionServer, str], thanks_pcm: bytes) -> None:
    _, url = service
    replies = await asyncio.to_thread(plain_client, url, thanks_pcm, list(MENU))
    words = " ".join(r.get("text", "") for r in replies).split()
    assert "감사합니다" in words and set(words) <= set(MENU) | {"[unk]"}


async def test_remote_stream_partials_finals_and_grammar_switch_on_one_connection(
        service: tuple[RecognitionServer, str], pool: ThreadPoolExecutor, hello_pcm: bytes,
        thanks_pcm: bytes) -> None:
    server, url = service
    stream = remote(url, pool).stream("r1", 8000)
    try:
        await push(stream, hello_pcm)
        final, events = await final_of(stream)
        assert final.text and any(isinstance(e, Partial) and e.text for e in events)
        stream.set_expect(Expect(kind="menu", phrases=MENU))
        await push(stream, thanks_pcm)
        final, _ = await final_of(stream)
        assert "감사합니다" in final.text.split() and set(final.text.split()) <= set(MENU)
        stream.set_expect(Expect(kind="free"))
        await push(stream, hello_pcm)
        final, _ = await final_of(stream)
        assert final.text
        assert server.stats.streams_total == 1          # three utterances, two grammar switches, one connection
    finally:
        await stream.aclose()


async def test_twenty_concurrent_streams_all_get_their_final(service: tuple[RecognitionServer, str],
                                                            pool: ThreadPoolExecutor, thanks_pcm: bytes) -> None:
    """20 callers answering a menu at the same moment (closed answers: the common case on the phone line;
    free speech of the Korean test model decodes at ~1x real time on a busy 2-core machine)."""
    server, url = service
    recognizer = remote(url, pool)
    streams = [recognizer.stream(f"c{i}", 8000) for i in range(20)]
    try:
        for s in streams:
            s.set_expect(Expect(kind="menu", phrases=MENU))
        await asyncio.gather(*(push(s, thanks_pcm) for s in streams))
        finals = await asyncio.gather(*(final_of(s, limit_s=240) for s in streams))
        assert all("감사합니다" in f.text.split() for f, _ in finals)
        assert server.stats.streams_total == 20 and server.stats.errors == 0
    finally:
        await asyncio.gather(*(s.aclose() for s in streams))


async def test_streams_over_the_limit_are_refused_not_queued(vosk_model: Any) -> None:
    server = RecognitionServer({"vosk": lambda rate: VoskDecoder(vosk_model, rate)}, default_engine="vosk",
                               threads=1, max_streams=1)
    port = await server.start("127.0.0.1", 0)
    try:
        def two() -> int | None:
            with connect(f"ws://127.0.0.1:{port}") as first:
                first.send(json.dumps({"config": {"sample_rate": 8000}}))
                with connect(f"ws://127.0.0.1:{port}") as second:
                    try:
                        second.recv(timeout=5)
                    except Exception:
                        pass
                    return second.close_code
        assert await asyncio.to_thread(two) == 1013
        assert server.stats.streams_refused == 1
    finally:
        await server.close()


async def test_bad_messages_close_the_stream_with_a_reason_and_the_service_lives(
        service: tuple[RecognitionServer, str], hello_pcm: bytes) -> None:
    server, url = service

    def bad(message: str | bytes) -> tuple[int | None, str | None]:
        with connect(url) as ws:
            ws.send(message)
            try:
                ws.recv(timeout=5)
            except Exception:
                pass
            return ws.close_code, ws.close_reason
    for message in ("not json", "[1,2]", json.dumps({"config": {"sample_rate": 44100}}), b"\x00\x01\x02",
                    "[" * 5000 + "]" * 5000, json.dumps({"config": {"phrase_list": "x"}})):
        code, reason = await asyncio.to_thread(bad, message)
        assert code == 1008 and reason, message[:20]
    replies = await asyncio.to_thread(plain_client, url, hello_pcm)   # still serving
    assert " ".join(r.get("text", "") for r in replies).strip()
    assert server.stats.errors == 0


def start_service_process(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "VERATUR__ASR__MODEL": "ko-test"}
    proc = subprocess.Popen([sys.executable, "-m", "veratur.cli", "asr-service", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "asr-service ready" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the recognition service did not start")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_service_killed_mid_call_keypad_then_speech_again_after_restart(
        pool: ThreadPoolExecutor, hello_pcm: bytes) -> None:
    port = free_port()
    proc = await asyncio.to_thread(start_service_process, port)
    recognizer = remote(f"ws://127.0.0.1:{port}", pool)
    try:
        stream = recognizer.stream("k1", 8000)
        await push(stream, hello_pcm)
        assert (await final_of(stream))[0].text
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await push(stream, hello_pcm)                    # the call goes on; the stream stops, never hangs
        async with asyncio.timeout(15):
            while not stream.closed:  # noqa: ASYNC110 (state owned by the stream/recognizer)
                await asyncio.sleep(0.05)
        await stream.aclose()
        down = recognizer.stream("k2", 8000)              # a new call while the service is down: keypad only
        async with asyncio.timeout(15):
            while not down.closed and recognizer.available:  # noqa: ASYNC110 (state owned by the stream/recognizer)
                await asyncio.sleep(0.05)
        await down.aclose()
        assert not recognizer.available
        proc = await asyncio.to_thread(start_service_process, port)
        async with asyncio.timeout(20):
            while not recognizer.available:  # noqa: ASYNC110 (state owned by the stream/recognizer)
                await asyncio.sleep(0.1)
        again = recognizer.stream("k3", 8000)
        await push(again, hello_pcm)
        assert (await final_of(again))[0].text
        await again.aclose()
    finally:
        proc.kill()
        proc.wait(10)


class BaseProtocolServer:
    """A vosk-server that speaks only the base protocol, exactly as alphacep's asr_server.py behaves: a config
    applies only before the first audio, eof and reset are compared as exact strings."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.connections = 0

    async def handle(self, ws: ServerConnection) -> None:
        import vosk
        self.connections += 1
        rec, phrases, rate = None, None, 8000.0
        loop = asyncio.get_running_loop()
        async for message in ws:
            if isinstance(message, str) and "config" in message:
                cfg = json.loads(message)["config"]
                phrases = cfg.get("phrase_list", phrases)
                rate = float(cfg.get("sample_rate", rate))
                continue
            if rec is None:
                rec = (vosk.KaldiRecognizer(self.model, rate, json.dumps(phrases, ensure_ascii=False)) if phrases
                       else vosk.KaldiRecognizer(self.model, rate))
                rec.SetWords(True)

            def chunk(rec: Any = rec, message: Any = message) -> tuple[str, bool]:
                if message == EOF_MESSAGE:
                    return rec.FinalResult(), True
                if message == RESET_MESSAGE:
                    return rec.FinalResult(), False
                if rec.AcceptWaveform(message):
                    return rec.Result(), False
                return rec.PartialResult(), False
            reply, stop = await loop.run_in_executor(None, chunk)
            await ws.send(reply)
            if stop:
                break


async def test_the_worker_works_against_a_base_protocol_vosk_server(vosk_model: Any, pool: ThreadPoolExecutor,
                                                                   hello_pcm: bytes, thanks_pcm: bytes) -> None:
    base = BaseProtocolServer(vosk_model)
    async with serve(base.handle, "127.0.0.1", 0) as srv:
        port = list(srv.sockets)[0].getsockname()[1]
        stream = remote(f"ws://127.0.0.1:{port}", pool, protocol="vosk").stream("b1", 8000)
        try:
            await push(stream, hello_pcm)
            assert (await final_of(stream))[0].text
            stream.set_expect(Expect(kind="menu", phrases=MENU))     # grammar: a new connection on this server
            await push(stream, thanks_pcm)
            final, _ = await final_of(stream)
            assert "감사합니다" in final.text.split() and set(final.text.split()) <= set(MENU)
            assert base.connections == 2
        finally:
            await stream.aclose()


def test_threads_do_not_leak_from_the_sync_client() -> None:
    before = threading.active_count()
    time.sleep(0.1)
    assert threading.active_count() <= before + 1


class _FreeSpeechDialogue(BaseHTTPRequestHandler):
    """Stands in for Rasa's REST channel (the real Rasa path is tests/dialogs): every turn asks for free speech,
    so the Korean test model is not held to the Spanish menu's grammar, which the DTMF fallback would impose."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/model/parse"):
            body: Any = {"intent": {"name": "greet", "confidence": 0.9}, "entities": []}
        else:
            body = [{"text": "Diga lo que necesita.", "custom": {"expect": {"kind": "free"}}}]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.sip
def test_a_real_call_is_recognized_through_the_service(tmp_path: Path) -> None:
    """A worker with `recognition_service.mode: builtin` loads no model: a real SIP call's speech is decoded by the
    service process, and the caller's words land in the call's transcript."""
    dialogue = ThreadingHTTPServer(("127.0.0.1", 0), _FreeSpeechDialogue)
    threading.Thread(target=dialogue.serve_forever, daemon=True).start()
    from case_bridge.service import CaseService
    from testkit.db import migrated_sqlite
    from testkit.worker import Worker, caller
    port = free_port()
    service = start_service_process(port)
    db_url = migrated_sqlite(tmp_path / "cases.db")
    wav = tmp_path / "hello.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(silence(200) + speech(HELLO) + silence(300))
    worker = Worker(tmp_path, env={"VERATUR__ASR__MODEL": "ko-test", "VERATUR__DATABASE__URL": db_url,
                                   "VERATUR__RECOGNITION_SERVICE__MODE": "builtin",
                                   "VERATUR__DIALOGUE__RASA_URL": f"http://127.0.0.1:{dialogue.server_port}",
                                   "VERATUR__RECOGNITION_SERVICE__URL": f"ws://127.0.0.1:{port}"},
                    app="engine").start()
    try:
        results, proc = caller(worker.uri, "--wav", str(wav), "--wait", "0", "--reply-timeout", "20",
                               timeout_s=150)
        assert proc.returncode == 0, proc.stderr[-3000:]
        [result] = results
        assert result["turns"][0]["reply_start"] is not None
        cases = CaseService.from_url(db_url)
        try:
            said = [t.text for t in cases.transcript(str(result["call_id"])) if t.speaker == "caller"]
        finally:
            cases.close()
        assert any(text and not text.startswith("[") for text in said), said   # recognized words, not keys
    finally:
        code = worker.stop()
        service.kill()
        service.wait(10)
        dialogue.shutdown()
    assert code == 0, worker.log()[-3000:]
    assert "recognizer ready" in worker.log() and "engine=service" in worker.log()

"""The vosk-server WebSocket protocol, as `res_speech_vosk` and vosk-server's `asr_server.py` speak it, and the
two places where the built-in service goes further without breaking a plain client or server.

Client → server:
- text `{"config": {"sample_rate": 8000, "phrase_list": [...]}}`: no reply. vosk-server applies it only before
  the first audio; the built-in service also mid-stream (grammar switching without a reconnect).
  Extensions in the same object, ignored by vosk-server: `"engine": "vosk"|"whisper"`, `"expect": {...}` (what the
  prompt expects, so Whisper can map free text onto the closed answer).
- binary: s16le mono PCM at the configured rate. Reply: `{"partial": "..."}`, or `{"text": "...", "result": [...]}`
  when the recognizer closed a segment by itself.
- text `{"reset" : 1}`: reply with the final result of the utterance; the stream goes on.
- text `{"eof" : 1}`: reply with the final result; the server closes the connection.

Two more extensions, used only between the worker and the built-in service (vosk-server knows neither):
- text `{"drop" : 1}`: forget the utterance without decoding it (the caller was asked for keys instead: overload);
  reply `{"text": "", "result": [], "dropped": true}`.
- text `{"reset": 1, "max_wait_ms": n}`: a final that waits longer than n ms in the service's pool before its
  decode can start is dropped the same way (the worker asks for keys past that wait: decoding it would only delay
  the others). The worker sends n = its bound minus what the utterance already waited.
- every reply to a client that sent an extension (`engine`, `expect`) carries `"backlog": {"waiting": n,
  "threads": t, "decode_s": s}`: finals waiting in the service's pool and the recent final-decode seconds, so the
  worker can estimate how long the next final will wait (ivr.speech.backlog).

vosk-server compares the reset and eof messages as exact strings, spaces included: they are sent exactly so.
A final result may carry the extension `"confidence"` (mean word confidence); otherwise it is computed from the
words' `conf` in `result`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EOF_MESSAGE = '{"eof" : 1}'
RESET_MESSAGE = '{"reset" : 1}'
DROP_MESSAGE = '{"drop" : 1}'
MAX_MESSAGE_BYTES = 1 << 20          # ~65 s of 8 kHz audio in one message: far more than any client sends
UNK = "[unk]"


class ProtocolError(ValueError):
    """A client message the service cannot take (shown to the client as the close reason)."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    sample_rate: int | None = None
    phrase_list: list[str] | None = None
    phrases_given: bool = False
    engine: str | None = None
    expect: dict[str, Any] | None = None
    max_wait_ms: int | None = None       # a reset's bound on its wait in the pool (extension)


def reset_message(max_wait_ms: int | None = None) -> str:
    """The final request; with a bound on its wait only for the built-in service (vosk-server wants it exact)."""
    if max_wait_ms is None:
        return RESET_MESSAGE
    return json.dumps({"reset": 1, "max_wait_ms": max(0, int(max_wait_ms))})


def config_message(sample_rate: int, phrases: list[str] | None, *, engine: str | None = None,
                   expect: dict[str, Any] | None = None) -> str:
    config: dict[str, Any] = {"sample_rate": sample_rate}
    if phrases:
        config["phrase_list"] = phrases
    if engine:
        config["engine"] = engine
    if expect:
        config["expect"] = expect
    return json.dumps({"config": config}, ensure_ascii=False)


def parse_text(message: str) -> tuple[str, ClientConfig | None]:
    """('config', cfg) | ('eof', None) | ('reset', None or cfg with max_wait_ms) | ('drop', None); ProtocolError
    for anything else."""
    try:
        body = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("not JSON") from exc
    if not isinstance(body, dict):
        raise ProtocolError("expected a JSON object")
    if "config" in body:
        raw = body["config"]
        if not isinstance(raw, dict):
            raise ProtocolError("config: expected an object")
        return "config", _config(raw)
    if body.get("eof"):
        return "eof", None
    if body.get("reset"):
        if "max_wait_ms" not in body:
            return "reset", None
        return "reset", ClientConfig(max_wait_ms=_max_wait(body["max_wait_ms"]))
    if body.get("drop"):
        return "drop", None
    raise ProtocolError("unknown message")


def _config(raw: dict[str, Any]) -> ClientConfig:
    rate = raw.get("sample_rate")
    if rate is not None:
        try:
            rate = int(float(rate))
        except (TypeError, ValueError) as exc:
            raise ProtocolError("sample_rate: a number") from exc
        if rate not in (8000, 16000):
            raise ProtocolError("sample_rate: 8000 or 16000")
    phrases = raw.get("phrase_list")
    if phrases is not None:
        if not isinstance(phrases, list) or len(phrases) > 2000 or not all(isinstance(p, str) for p in phrases):
            raise ProtocolError("phrase_list: a list of at most 2000 strings")
        phrases = [p[:200] for p in phrases if p != UNK] or None
    engine = raw.get("engine")
    if engine is not None and not isinstance(engine, str):
        raise ProtocolError("engine: a string")
    expect = raw.get("expect")
    if expect is not None and not isinstance(expect, dict):
        raise ProtocolError("expect: an object")
    return ClientConfig(rate, phrases, "phrase_list" in raw, engine, expect)


def _max_wait(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 600_000:
        raise ProtocolError("max_wait_ms: an integer from 0 to 600000")
    return value


def final_message(text: str, confidence: float | None) -> str:
    words = [{"word": w, "conf": round(confidence, 3) if confidence is not None else 1.0} for w in text.split()]
    body: dict[str, Any] = {"text": text, "result": words}
    if confidence is not None:
        body["confidence"] = round(confidence, 4)
    return json.dumps(body, ensure_ascii=False)


def with_backlog(reply: str, waiting: int, threads: int, decode_s: float) -> str:
    """`reply` (a JSON object) with the service's backlog extension."""
    body = json.loads(reply)
    body["backlog"] = {"waiting": waiting, "threads": threads, "decode_s": round(decode_s, 4)}
    return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Backlog:
    waiting: int
    threads: int
    decode_s: float


@dataclass(frozen=True, slots=True)
class ServerReply:
    text: str | None          # a closed segment or a final result
    partial: str | None
    confidence: float | None
    backlog: Backlog | None = None     # the built-in service's extension (None from vosk-server)
    dropped: bool = False              # the service dropped the utterance undecoded (a drop, or max_wait_ms)


def _backlog(raw: object) -> Backlog | None:
    """The backlog extension, or None when absent or malformed (a reply is never refused for it)."""
    if not isinstance(raw, dict):
        return None
    try:
        waiting, threads, decode_s = int(raw["waiting"]), int(raw["threads"]), float(raw["decode_s"])
    except (KeyError, TypeError, ValueError):
        return None
    if waiting < 0 or threads < 1 or not 0.0 <= decode_s < 3600.0:
        return None
    return Backlog(waiting, threads, decode_s)


def parse_reply(message: str | bytes) -> ServerReply:
    try:
        body = json.loads(message)
    except ValueError as exc:
        raise ProtocolError("reply is not JSON") from exc
    if not isinstance(body, dict):
        raise ProtocolError("reply: expected a JSON object")
    if "text" in body:
        words = [w for w in body.get("result") or [] if isinstance(w, dict) and w.get("word") != UNK]
        conf = body.get("confidence")
        if conf is None and words:
            conf = sum(float(w.get("conf", 0.0)) for w in words) / len(words)
        text = " ".join(w for w in str(body["text"]).split() if w != UNK)
        return ServerReply(text, None, float(conf) if conf is not None else None, _backlog(body.get("backlog")),
                           body.get("dropped") is True)
    return ServerReply(None, " ".join(w for w in str(body.get("partial", "")).split() if w != UNK), None,
                       _backlog(body.get("backlog")))

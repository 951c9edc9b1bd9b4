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
    """('config', cfg) | ('eof', None) | ('reset', None); ProtocolError for anything else."""
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
        return "reset", None
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


def final_message(text: str, confidence: float | None) -> str:
    words = [{"word": w, "conf": round(confidence, 3) if confidence is not None else 1.0} for w in text.split()]
    body: dict[str, Any] = {"text": text, "result": words}
    if confidence is not None:
        body["confidence"] = round(confidence, 4)
    return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ServerReply:
    text: str | None          # a closed segment or a final result
    partial: str | None
    confidence: float | None


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
        return ServerReply(text, None, float(conf) if conf is not None else None)
    return ServerReply(None, " ".join(w for w in str(body.get("partial", "")).split() if w != UNK), None)

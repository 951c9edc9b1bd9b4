"""`veratur asr-service`: the node's recognition service process (one per node, supervised by `veratur up`).

It loads each configured speech model once — the Vosk model of `asr.model` and, where installed, Whisper — and
serves every worker's streams over the vosk-server WebSocket protocol (`ivr.speech.service`). With
`recognition_service.mode: builtin` the workers load no model at all: the node holds one copy per model instead
of one per worker.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from urllib.parse import urlparse

from foundation.config import Settings
from foundation.logs import kv
from ivr.speech.choice import load_whisper
from ivr.speech.recognizer import Decoder, VoskDecoder, VoskRecognizer
from ivr.speech.service.server import DecoderFactory, RecognitionServer
from voice_models import ModelError, locate
from voice_models.whisper import locate_whisper

log = logging.getLogger("ivr.recognition_service")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="listen port (default: the port of recognition_service.url)")
    parser.add_argument("--host", help="listen address (default: the host of recognition_service.url)")


def load_engines(settings: Settings) -> dict[str, DecoderFactory]:
    """Every engine whose model is installed, keyed by name (Vosk first, as `asr.engine: auto` prefers it)."""
    engines: dict[str, DecoderFactory] = {}
    try:
        vosk_model = VoskRecognizer.load_model(locate(settings.asr.model))
    except ModelError as exc:
        log.warning("no Vosk model for the service %s", kv(model=settings.asr.model, error=str(exc)[:160]))
    else:
        def vosk(rate: int, model: object = vosk_model) -> Decoder:
            return VoskDecoder(model, rate)
        engines["vosk"] = vosk
    try:
        whisper_dir = locate_whisper(settings.asr.whisper.model)
    except ModelError as exc:
        log.warning("no Whisper model for the service %s", kv(model=settings.asr.whisper.model, error=str(exc)[:160]))
    else:
        from ivr.speech.whisper import WhisperDecoder
        whisper_model = load_whisper(settings, whisper_dir)

        def whisper(rate: int) -> Decoder:
            return WhisperDecoder(whisper_model, rate)
        engines["whisper"] = whisper
    return engines


async def serve(settings: Settings, host: str, port: int) -> int:
    t0 = time.perf_counter()
    engines = await asyncio.to_thread(load_engines, settings)
    if not engines:
        log.error("recognition service: no speech model installed; run `veratur models fetch`")
        return 2
    default = settings.asr.engine if settings.asr.engine in engines else next(iter(engines))
    cfg = settings.recognition_service
    server = RecognitionServer(engines, default_engine=default, threads=cfg.threads, max_streams=cfg.max_streams)
    bound = await server.start(host, port)
    print(f"veratur asr-service ready {kv(url=f'ws://{host}:{bound}', engines=','.join(engines), default=default, load_s=round(time.perf_counter() - t0, 1))}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    s = server.stats
    log.info("recognition service stopping %s", kv(streams_total=s.streams_total, refused=s.streams_refused,
                                                  audio_s=round(s.audio_s, 1), decode_s=round(s.decode_s, 1)))
    await server.close()
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    url = urlparse(settings.recognition_service.url)
    host = args.host or url.hostname or "127.0.0.1"
    port = args.port if args.port is not None else (url.port or 2700)
    return asyncio.run(serve(settings, host, port))

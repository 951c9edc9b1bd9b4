"""The node's calling side for the callback tests: one worker's SIP edge on free ports, taking SIP from
127.0.0.0/8 only, and the espeak synthesizer the callback conversation speaks with."""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

from foundation.config import Settings
from ivr.sip.edge import EdgeConfig, SipEdge
from ivr.speech.tts import EspeakSynthesizer


@contextlib.asynccontextmanager
async def outbound_worker(settings: Settings, tmp_path: Path, node: str
                          ) -> AsyncIterator[tuple[SipEdge, EspeakSynthesizer]]:
    config = dataclasses.replace(EdgeConfig.from_settings(settings, 0, node), port=0, transports=("udp",),
                                 randomize_rtp_port=True, allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
    edge = SipEdge(config)
    await edge.start()
    tts = EspeakSynthesizer(voice=settings.tts.voice, rate=settings.tts.rate, sample_rate=8000,
                            cache_dir=tmp_path / "tts")
    try:
        await tts.start()
        yield edge, tts
    finally:
        await edge.stop(0)
        await tts.close()

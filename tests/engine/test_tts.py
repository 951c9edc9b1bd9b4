"""Real pyttsx3 + espeak-ng: prompts at the call rate, not silent, cached on disk, one render per text."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.speech.audio_ops import energy_db
from ivr.speech.tts import EspeakSynthesizer, TtsError, cache_key

pytestmark = pytest.mark.timeout(120)
TEXT = "Bienvenido al portal ciudadano de Veracruz."


@pytest.fixture
async def synth(tmp_path: Path) -> AsyncIterator[EspeakSynthesizer]:
    s = EspeakSynthesizer(voice="roa/es-419", rate=165, sample_rate=8000, cache_dir=tmp_path)
    await s.start()
    yield s
    await s.close()


async def test_renders_speech_at_the_call_rate(synth: EspeakSynthesizer, tmp_path: Path) -> None:
    pcm = await synth.synthesize(TEXT)
    seconds = len(pcm) / 2 / 8000
    assert len(pcm) % 2 == 0 and 1.0 < seconds < 6.0
    assert energy_db(pcm) > -35.0                       # speech, not silence
    assert (tmp_path / (cache_key(TEXT, "roa/es-419", 165, 8000) + ".pcm")).read_bytes() == pcm
    assert synth.stats.renders == 1 and synth.stats.last_render_s > 0


async def test_cache_hit_returns_the_same_audio_without_rendering(synth: EspeakSynthesizer, tmp_path: Path) -> None:
    first = await synth.synthesize(TEXT)
    again = await synth.synthesize("  Bienvenido al portal   ciudadano de Veracruz. ")   # same text, spacing aside
    assert again == first
    assert synth.stats.renders == 1 and synth.stats.hits == 1
    other = EspeakSynthesizer(voice="roa/es-419", rate=165, sample_rate=8000, cache_dir=tmp_path)
    assert await other.synthesize(TEXT) == first                # a new process finds it on disk
    assert other.stats.renders == 0
    await other.close()
    leftovers = [name for name in os.listdir(tmp_path) if not name.endswith(".pcm")]
    assert leftovers == []                                      # no temporary files left behind


async def test_key_includes_rate_and_sample_rate(tmp_path: Path) -> None:
    keys = {cache_key(TEXT, "roa/es-419", r, sr) for r in (150, 165) for sr in (8000, 16000)}
    assert len(keys) == 4
    wide = EspeakSynthesizer(voice="roa/es-419", rate=165, sample_rate=16000, cache_dir=tmp_path)
    narrow = EspeakSynthesizer(voice="roa/es-419", rate=165, sample_rate=8000, cache_dir=tmp_path)
    a, b = await wide.synthesize(TEXT), await narrow.synthesize(TEXT)
    assert abs(len(a) - 2 * len(b)) <= 0.01 * len(a)      # espeak-ng output varies by a few samples per render
    await wide.close()
    await narrow.close()


async def test_concurrent_requests_render_once_and_prerender_fills_the_cache(synth: EspeakSynthesizer) -> None:
    results = await asyncio.gather(*(synth.synthesize("Un momento, por favor.") for _ in range(5)))
    assert len(set(results)) == 1 and synth.stats.renders == 1
    await synth.prerender(["Hola.", "Adiós.", "Hola.", " "])
    assert synth.stats.renders == 3
    await synth.synthesize("Adiós.")
    assert synth.stats.renders == 3


async def test_unknown_voice_is_a_clear_error(tmp_path: Path) -> None:
    s = EspeakSynthesizer(voice="xx/nonexistent", rate=165, sample_rate=8000, cache_dir=tmp_path)
    with pytest.raises(TtsError, match="tts.voice"):
        await s.start()
    await s.close()


async def test_empty_text_is_no_audio(synth: EspeakSynthesizer) -> None:
    assert await synth.synthesize("   ") == b""

"""First reply audio for a short and a long reply that are not prerendered: espeak-ng (pyttsx3) through the
session's sentence streaming vs rendering the whole reply first. Prints render time of the first audio, the
reply's audio length and the real-time factor. Each text is made unique per run so the disk cache never answers.
Usage: .venv/bin/python bench/tts_stream.py [--runs N]"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from ivr.speech.tts import EspeakSynthesizer, split_sentences

SHORT = "Con gusto. Su trámite está en revisión."
LONG = ("Su trámite con folio uno ocho ocho cinco siete tres dos ocho es la licencia de funcionamiento. Estado: en "
        "revisión por la Dirección de Comercio. Lo revisa la Lic. Martínez, en la oficina de Av. Juárez número doce, "
        "de lunes a viernes de nueve a tres. Le faltan dos documentos: el comprobante de domicilio y la "
        "identificación oficial. Puede entregarlos en el portal ciudadano, en un quiosco o en cualquier oficina "
        "del estado. Si lo prefiere, un asesor le atiende en esta misma llamada. ¿Desea algo más?")


async def first_audio_s(synth: EspeakSynthesizer, text: str, *, streaming: bool) -> tuple[float, float]:
    """(seconds until the first audio could be queued, seconds of audio in the reply)."""
    tag = uuid.uuid4().hex[:6]
    text = f"Caso {' '.join(tag)}. {text}"                     # unique from its first sentence: never a cache hit
    t0 = time.perf_counter()
    pieces = split_sentences(text) if streaming else [text]
    first = await synth.synthesize(pieces[0])
    ready = time.perf_counter() - t0
    rest = [await synth.synthesize(p) for p in pieces[1:]]
    audio_s = (len(first) + sum(len(p) for p in rest)) / 2 / synth.sample_rate
    return ready, audio_s


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        synth = EspeakSynthesizer(voice="roa/es-419", rate=165, sample_rate=8000, cache_dir=Path(cache))
        await synth.start()
        await synth.synthesize("Calentando.")
        print(f"{'reply':<6} {'mode':<10} {'audio s':>8} {'first audio p50 ms':>19} {'max ms':>8}")
        for name, text in (("short", SHORT), ("long", LONG)):
            for streaming in (False, True):
                got = [await first_audio_s(synth, text, streaming=streaming) for _ in range(runs)]
                firsts = [g[0] * 1000 for g in got]
                print(f"{name:<6} {'sentences' if streaming else 'whole':<10} {got[0][1]:>8.1f} "
                      f"{statistics.median(firsts):>19.0f} {max(firsts):>8.0f}")
        await synth.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))

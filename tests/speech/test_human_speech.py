"""The shared human-speech toolkit: transcripts parsed, channel model exact, noise at the SNR asked."""
from __future__ import annotations

import numpy as np
import pytest

from case_bridge.folio import is_valid
from testkit import human_speech as hs

pytestmark = pytest.mark.skipif(hs.missing_reason() is not None, reason=hs.missing_reason() or "")


def test_transcripts_cover_the_digits_and_phrases() -> None:
    recs = hs.recordings()
    assert len(recs) > 300
    assert [recs[f"digits/{d}"].text for d in "0123"] == ["cero", "uno", "dos", "tres"]
    assert recs["digits/10"].text == "diez"          # listed under the wrong key in the package
    assert not any(r.text.startswith("[") for r in recs.values())


def test_phrase_subset_is_fixed_and_clean() -> None:
    subset = hs.phrase_subset()
    assert len(subset) == 30
    assert [r.name for r in subset] == [r.name for r in hs.phrase_subset()]
    assert all(3 <= r.words <= 12 and not any(c.isdigit() for c in r.text) for r in subset)


def test_spliced_folio_has_the_digits_and_the_gaps() -> None:
    folios = hs.folios(5)
    assert folios == hs.folios(5) and all(is_valid(f) and f[0] != "0" for f in folios)
    pcm = hs.splice_digits("12", gap_ms=200, lead_ms=100)
    one, two = hs.digit_pcm("1"), hs.digit_pcm("2")
    assert len(pcm) == 1600 + len(one) + 3200 + len(two)
    assert len(one) < len(hs.recording("digits/1").pcm())     # trimmed


def test_mulaw_round_trip_is_g711() -> None:
    ramp = np.arange(-32768, 32767, 7, dtype="<i2").tobytes()
    enc = hs.mulaw_encode(ramp)
    assert len(enc) == len(ramp) // 2
    out = np.frombuffer(hs.mulaw_decode(enc), dtype="<i2").astype(int)
    x = np.frombuffer(ramp, dtype="<i2").astype(int)
    # μ-law keeps about 2 % relative error on loud samples and a few steps near zero.
    assert np.all(np.abs(out - x) <= np.maximum(40, np.abs(x) * 0.035))
    assert hs.mulaw_encode(b"\x00\x00") == b"\xff"            # G.711: zero is 0xFF


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_lands_at_the_requested_snr(kind: str) -> None:
    speech = hs.recording("vm-msgsaved").pcm()
    noisy = hs.add_noise(speech, 10.0, kind=kind, seed=3)
    noise = np.frombuffer(noisy, dtype="<i2").astype(float) - np.frombuffer(speech, dtype="<i2")
    noise_db = 10 * np.log10(np.mean(noise ** 2) / 32768 ** 2)
    assert hs.speech_level_db(speech) - noise_db == pytest.approx(10.0, abs=0.5)


def test_wer_normalizes_numbers_accents_and_punctuation() -> None:
    assert hs.normalize_text("Marque 2, ¡Trés! 21") == "marque dos tres veintiuno"
    assert hs.normalize_text("folio 21745676") == "folio dos uno siete cuatro cinco seis siete seis"
    assert hs.wer("la conferencia ha terminado", "La conferencia, ha terminado.") == 0.0
    assert hs.wer(["uno dos", "tres"], ["uno", "tres cuatro"]) == pytest.approx(2 / 3)
    assert hs.number_words(1995) == "mil novecientos noventa y cinco"

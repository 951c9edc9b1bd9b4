"""Whisper base on real human Spanish speech (Asterisk es_MX recordings) through the 8 kHz μ-law channel."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from ivr.speech.endpointing import EndpointConfig
from ivr.speech.expect import Expect
from ivr.speech.recognizer import Final, StreamConfig
from ivr.speech.whisper import WhisperDecoder, WhisperModel, WhisperOptions, WhisperRecognizer, collapse_repeats
from testkit import human_speech as hs
from testkit.fakes import frames_of, noise, silence
from voice_models import ModelError
from voice_models.whisper import locate_whisper

# The default options (beam 3, window cut to the utterance and padded with silence, timestamps predicted);
# measured on this subset with bench/asr.py: WER 9.0 %, folios 10/10 (was 16.7 % with beam 1, no timestamps).
WER_BOUND = 0.10
MENU = Expect(kind="menu", phrases=("turismo", "información de trámites", "estado de mi trámite", "asesor"))


def _model_dir() -> Path | None:
    try:
        return locate_whisper()
    except ModelError:
        return None


pytestmark = [
    pytest.mark.skipif(hs.missing_reason() is not None, reason=hs.missing_reason() or ""),
    pytest.mark.skipif(_model_dir() is None, reason="Whisper base not placed: run `veratur models fetch`"),
]


@pytest.fixture(scope="session")
def model() -> WhisperModel:
    path = _model_dir()
    assert path is not None
    return WhisperModel(path, options=WhisperOptions())


def test_wer_on_the_fixed_phrase_subset(model: WhisperModel) -> None:
    # Accuracy without the wall-time cap: on a loaded machine the cap drops results (tested below).
    opt = replace(model.options, max_decode_s=60.0)
    subset = hs.phrase_subset()
    hyps = [model.transcribe(hs.channel(r.pcm()), hs.RATE, opt).text for r in subset]
    assert hs.wer([r.text for r in subset], hyps) <= WER_BOUND


def test_spliced_folios_come_out_exact(model: WhisperModel) -> None:
    decoder = WhisperDecoder(model, hs.RATE, options=replace(model.options, max_decode_s=60.0))
    decoder.set_expect(Expect(kind="digits", max_digits=8))
    heard = []
    for folio in hs.folios(10):
        decoder.accept(hs.channel(hs.splice_digits(folio, lead_ms=200, tail_ms=300)))
        heard.append(decoder.final()[0])
    assert heard == hs.folios(10)


@pytest.mark.parametrize("kind", ["silence", "hiss"])
async def test_silence_and_line_hiss_never_reach_the_decoder(model: WhisperModel, kind: str) -> None:
    pool = ThreadPoolExecutor(1)
    rec = WhisperRecognizer(model, pool, StreamConfig(-40.0, 300, EndpointConfig(900, 450)))
    stream = rec.stream("quiet", hs.RATE)
    try:
        audio = silence(3000) if kind == "silence" else noise(3000, -55.0)
        for frame in frames_of(hs.mulaw_channel(audio)):
            stream.push_frame(frame)
        await asyncio.sleep(0.2)
        assert stream.get_nowait() is None and stream.frames_decoded == 0
    finally:
        await stream.aclose()
        pool.shutdown()


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_loud_noise_gives_no_text(model: WhisperModel, kind: str) -> None:
    result = model.transcribe(hs.mulaw_channel(hs.noise_pcm(3000, -25.0, kind=kind)), hs.RATE)
    assert result.text == "", result


def test_a_decode_stays_within_its_token_budget_and_time_cap(model: WhisperModel) -> None:
    babble = hs.mulaw_channel(hs.noise_pcm(20000, -20.0, kind="babble", seed=5))
    opt = model.options
    result = model.transcribe(babble, hs.RATE)
    assert result.tokens <= max(opt.min_tokens, int(20.0 * opt.tokens_per_s))
    # Over the cap the result is dropped: a late answer never reaches the dialogue.
    assert result.decode_s <= opt.max_decode_s or (result.rejected is not None and result.text == "")


async def test_stream_delivers_a_mapped_final_at_end_of_speech(model: WhisperModel) -> None:
    pool = ThreadPoolExecutor(1)
    rec = WhisperRecognizer(model, pool, StreamConfig(-40.0, 300, EndpointConfig(900, 450)))
    stream = rec.stream("digits", hs.RATE)
    try:
        stream.set_expect(Expect(kind="digits", max_digits=4))
        for frame in frames_of(hs.channel(hs.splice_digits("2705", lead_ms=300, tail_ms=900))):
            stream.push_frame(frame)
        async with asyncio.timeout(60):
            while not isinstance(event := await stream.get(), Final):
                pass
        assert event.text == "2705"
    finally:
        await stream.aclose()
        pool.shutdown()


def test_collapse_repeats_keeps_digit_strings() -> None:
    assert collapse_repeats("modo de grabación modo de grabación") == "modo de grabación"
    assert collapse_repeats("cero cero cero cero") == "cero cero cero cero"


MISSED_ALONE = pytest.mark.xfail(strict=False, reason="open (issue 11): on this machine's fresh install of 2026-12-02 Whisper returns nothing for this one recording alone, also at commit 1b94789 before that day's speech changes and with ctranslate2 4.7.1, 4.8.4 and 4.8.5; it passed in stop 21's CI; cause not found")


@pytest.mark.parametrize(("digit", "name"), [(1, "uno"), (3, "tres"), (4, "cuatro"), (7, "siete"),
                                             pytest.param(8, "ocho", marks=MISSED_ALONE)])
def test_a_digit_said_alone_at_a_menu_is_that_option_once(model: WhisperModel, digit: int, name: str) -> None:
    # "tres" alone came out as "3 3 3 3 3 3 3 3 3 3 3 3 3 3" (cut window padded with non-silence, no timestamps);
    # "ocho" alone scores below the free-speech log-prob guard and is kept because it is a valid menu answer.
    decoder = WhisperDecoder(model, hs.RATE, options=replace(model.options, max_decode_s=60.0))
    decoder.set_expect(MENU)
    decoder.accept(hs.channel(hs.pad(hs.recording(f"digits/{digit}").pcm(), 300, 450)))
    assert decoder.final()[0] == name
    assert decoder.last is not None and len(decoder.last.raw.split()) == 1, decoder.last


@pytest.mark.parametrize(("digit", "text"), [(1, "uno"), pytest.param(7, "siete", marks=MISSED_ALONE), (9, "nueve")])
def test_one_word_said_at_an_open_question_is_kept_once(model: WhisperModel, digit: int, text: str) -> None:
    # free speech: a word alone scores low (its timestamp tokens weigh in the mean) and may come out repeated
    decoder = WhisperDecoder(model, hs.RATE, options=replace(model.options, max_decode_s=60.0))
    decoder.set_expect(Expect(kind="free"))
    decoder.accept(hs.channel(hs.pad(hs.digit_pcm(str(digit)), 300, 900)))
    assert decoder.final()[0] == text


def _grouped(digits: str, group: int, pause_ms: int) -> bytes:
    """`digits` read in groups of `group` with `pause_ms` between groups (150 ms between digits)."""
    parts = [hs.splice_digits(digits[i:i + group], gap_ms=150) for i in range(0, len(digits), group)]
    return (b"\x00\x00" * (hs.RATE * pause_ms // 1000)).join(parts)


async def _finals(model: WhisperModel, pcm: bytes, expect: Expect) -> tuple[list[Final], int]:
    pool = ThreadPoolExecutor(1)
    rec = WhisperRecognizer(model, pool, StreamConfig(-40.0, 300, EndpointConfig(900, 450, 1200), vad="silero"))
    stream = rec.stream("grouped", hs.RATE)
    finals: list[Final] = []
    try:
        stream.set_expect(expect)
        for frame in frames_of(hs.channel(hs.pad(pcm, 300, 2000))):
            stream.push_frame(frame)
        async with asyncio.timeout(90):
            while not finals:
                if isinstance(event := await stream.get(), Final):
                    finals.append(event)
        return finals, stream.utterances_ended
    finally:
        await stream.aclose()
        pool.shutdown()


async def test_a_folio_read_in_two_groups_is_one_answer(model: WhisperModel) -> None:
    # 700 ms between "1765" and "4354" is longer than a closed answer's 450 ms silence: the stream reads the
    # digits heard so far at that pause, sees 4 of 8, and waits for the next group instead of ending the turn
    folio = hs.folios(3, seed=5)[2]
    finals, ended = await _finals(model, _grouped(folio, 4, 700), Expect(kind="digits", max_digits=8))
    assert ended == 1 and finals[0].text == folio


async def test_a_pin_read_in_pairs_is_one_answer(model: WhisperModel) -> None:
    finals, ended = await _finals(model, _grouped("6963", 2, 650), Expect(kind="digits", max_digits=4))
    assert ended == 1 and finals[0].text == "6963"

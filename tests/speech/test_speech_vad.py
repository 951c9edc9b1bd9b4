"""The speech VAD (Silero, from faster-whisper's package) on human Spanish speech and on noise, through the stream."""
from __future__ import annotations

import asyncio

import pytest

from ivr.speech.audio_ops import energy_db
from ivr.speech.endpointing import EndpointConfig
from ivr.speech.frames import frame_bytes
from ivr.speech.recognizer import EndOfSpeech, Final, RecognizeStream, SpeechProgress, SpeechStarted, StreamConfig
from ivr.speech.speech_vad import EnergyVoicing, SileroVoicing, make_voicing, shared_silero
from ivr.speech.vad import BargeInGuard
from testkit import human_speech as hs
from testkit.fakes import ScriptedDecoder, frames_of, noise, silence

pytestmark = pytest.mark.skipif(hs.missing_reason() is not None, reason=hs.missing_reason() or "")
FB = frame_bytes(hs.RATE)


def voiced_frames(det: SileroVoicing | EnergyVoicing, pcm: bytes) -> list[bool]:
    return [det.voiced(pcm[i:i + FB], energy_db(pcm[i:i + FB])) for i in range(0, len(pcm) - FB + 1, FB)]


def test_silero_hears_human_speech_and_not_loud_noise() -> None:
    det = SileroVoicing(shared_silero(), hs.RATE)
    speech = voiced_frames(det, hs.channel(hs.pad(hs.recording("vm-goodbye").pcm(), 400, 600)))
    assert sum(speech) * 20 >= 300                       # several hundred ms of the phrase are speech
    assert not any(speech[:15])                          # the 300 ms lead-in of silence is not
    for kind in ("white", "pink"):
        det.reset()
        noise = hs.mulaw_channel(hs.noise_pcm(3000, -25.0, kind=kind))
        # far above the energy threshold, and still not speech
        assert sum(voiced_frames(det, noise)) * 20 <= 100, kind
        assert all(voiced_frames(EnergyVoicing(-40.0), noise))


def test_silero_endpoint_is_on_the_speech_under_noise() -> None:
    # 10 dB SNR white noise: the energy VAD never sees the end; Silero ends within a few frames of it.
    pcm = hs.recording("vm-goodbye").pcm()
    noisy = hs.channel(hs.pad(pcm, 400, 1500), snr_db=10.0)
    silero = voiced_frames(SileroVoicing(shared_silero(), hs.RATE), noisy)
    energy = voiced_frames(EnergyVoicing(-40.0), noisy)
    speech_end = (400 + len(pcm) // (2 * hs.RATE // 1000)) // 20
    last = max(i for i, v in enumerate(silero) if v)
    assert abs(last - speech_end) <= 10                   # within 200 ms
    assert energy[-1]                                     # energy: still "speaking" at the end of the noise


def test_make_voicing_falls_back_to_energy_for_other_rates() -> None:
    assert isinstance(make_voicing("silero", 48000, energy_threshold_db=-40.0), EnergyVoicing)
    assert isinstance(make_voicing("energy", 8000, energy_threshold_db=-40.0), EnergyVoicing)


async def test_stream_with_silero_ends_the_utterance_under_noise() -> None:
    shared_silero()
    cfg = StreamConfig(-40.0, 300, EndpointConfig(900, 450), vad="silero")
    stream = RecognizeStream(lambda: ScriptedDecoder([]), None, cfg, sample_rate=hs.RATE)
    assert isinstance(stream.voicing, SileroVoicing)
    stream.start()
    try:
        noisy = hs.channel(hs.pad(hs.recording("vm-goodbye").pcm(), 400, 2000), snr_db=10.0)
        for frame in frames_of(noisy):
            stream.push_frame(frame)
        events = []
        async with asyncio.timeout(5):
            while not isinstance(ev := await stream.get(), EndOfSpeech):
                events.append(ev)
        assert any(isinstance(e, SpeechStarted) for e in events)
        assert stream.utterances_ended == 1
        # progress without partials, so barge-in can be decided for a decoder that has none (Whisper)
        progress = [e for e in events if isinstance(e, SpeechProgress)]
        assert progress and all(e.speech_vad for e in progress)
        assert [e.voiced_ms for e in progress] == sorted(e.voiced_ms for e in progress)
    finally:
        await stream.aclose()


def test_a_word_the_speech_vad_heard_may_cut_a_prompt_sooner_than_energy() -> None:
    guard = BargeInGuard(min_speech_ms=200)
    assert guard.should_interrupt(allow_barge_in=True, voiced_ms=300, partial="", speech_vad=True)
    assert not guard.should_interrupt(allow_barge_in=True, voiced_ms=300, partial="")
    assert not guard.should_interrupt(allow_barge_in=True, voiced_ms=180, partial="", speech_vad=True)
    assert not guard.should_interrupt(allow_barge_in=False, voiced_ms=900, partial="", speech_vad=True)


class _Handed:
    """Decoder seam: keeps the audio each utterance was handed (the stream's gating is what is tested)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.finals: list[bytes] = []

    def accept(self, pcm: bytes) -> str | None:
        self.buf += pcm
        return None

    def partial(self) -> str:
        return ""

    def final(self) -> tuple[str, float | None]:
        self.finals.append(bytes(self.buf))
        self.buf.clear()
        return "", None

    def reset(self) -> None:
        self.buf.clear()

    def set_phrases(self, phrases: object) -> None:
        return None

    def close(self) -> None:
        return None


async def _handed(pcm: bytes) -> list[bytes]:
    decoder = _Handed()
    stream = RecognizeStream(lambda: decoder, None, StreamConfig(-40.0, 300, EndpointConfig(900, 450)),
                             sample_rate=hs.RATE)
    stream.start()
    try:
        for frame in frames_of(pcm + silence(1000)):
            stream.push_frame(frame)
        finals = 0
        async with asyncio.timeout(5):
            while finals < stream.utterances_ended or not stream.utterances_ended:
                finals += isinstance(await stream.get(), Final)
    finally:
        await stream.aclose()
    return decoder.finals


async def test_a_blip_the_vad_dismissed_leaves_the_word_its_whole_pre_roll() -> None:
    # Line audio with bytes of its own (quiet noise, under the energy VAD), a 40 ms click the VAD opens on and
    # dismisses after its 200 ms hangover, the word 40 ms later. The pre-roll was emptied at the click's onset and
    # held only the 40 ms after the dismissal; it is a ring of the last 300 ms of frames, whatever they were.
    line = hs.noise_pcm(2000, -60.0, seed=3)
    word = noise(400, -20.0, seed=4)
    pcm = line[:hs.RATE * 2] + noise(40, -20.0, seed=5) + line[hs.RATE * 2:hs.RATE * 2 + 2 * hs.RATE * 260 // 1000] \
        + word
    handed = await _handed(pcm)
    assert len(handed) == 1
    onset = len(pcm) - len(word)
    assert handed[0].startswith(pcm[onset - 2 * hs.RATE * 300 // 1000:onset] + word)


async def test_the_pre_roll_never_holds_the_previous_utterance() -> None:
    # two words 1 s apart (free speech ends after 900 ms): the second's pre-roll is the line before it, none of
    # the first word
    first, second = noise(400, -20.0, seed=6), noise(400, -20.0, seed=7)
    line = hs.noise_pcm(1000, -60.0, seed=8)
    handed = await _handed(first + line + second)
    assert len(handed) == 2
    assert first[-FB:] not in handed[1]
    assert handed[1].startswith(line[-2 * hs.RATE * 300 // 1000:] + second)


async def test_a_word_that_starts_as_the_previous_utterance_ends_keeps_its_lead() -> None:
    # A click the VAD confirmed (80 ms) ends after the 900 ms of free-speech silence just as the word starts: the
    # word's utterance gets the last 300 ms of that silence (it was handed nothing before the word's first frame)
    click, word = noise(80, -20.0, seed=9), noise(400, -20.0, seed=10)
    line = hs.noise_pcm(900, -60.0, seed=11)
    handed = await _handed(click + line + word)
    assert len(handed) == 2
    assert handed[1].startswith(line[-2 * hs.RATE * 300 // 1000:] + word)

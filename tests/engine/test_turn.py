"""Caller VAD state machine and the barge-in guard, with plain numbers and then with real audio frames."""
from __future__ import annotations

from ivr.speech.audio_ops import energy_db
from ivr.speech.vad import BargeInGuard, CallerState, CallerTurnTracker
from testkit.fakes import frames_of
from testkit.sounds import click, cough, silence, speech

LOUD, QUIET = -20.0, -70.0


def feed(tracker: CallerTurnTracker, levels: list[float], start: float = 0.0) -> list[CallerState]:
    states = []
    for i, level in enumerate(levels):
        tracker.push(level, start + (i + 1) * 0.02)
        states.append(tracker.state)
    return states


def test_quiet_frames_stay_quiet() -> None:
    t = CallerTurnTracker(-40.0)
    assert feed(t, [QUIET] * 50) == [CallerState.QUIET] * 50
    assert t.voiced_ms == 0


def test_speech_goes_starting_then_speaking_after_start_ms() -> None:
    t = CallerTurnTracker(-40.0, start_ms=60, hangover_ms=200)
    states = feed(t, [LOUD] * 4)
    assert states == [CallerState.STARTING, CallerState.STARTING, CallerState.SPEAKING, CallerState.SPEAKING]
    assert t.voiced_ms == 80
    assert t.speech_started_at == 0.0          # start of the first voiced frame


def test_single_loud_frame_is_dismissed_after_hangover() -> None:
    t = CallerTurnTracker(-40.0, start_ms=60, hangover_ms=200)
    transitions = [t.push(level, (i + 1) * 0.02) for i, level in enumerate([LOUD] + [QUIET] * 11)]
    assert t.state is CallerState.QUIET
    changes = [(tr.before, tr.after) for tr in transitions if tr is not None]
    assert changes == [(CallerState.QUIET, CallerState.STARTING), (CallerState.STARTING, CallerState.QUIET)]


def test_hangover_bridges_short_pauses_then_stopping_holds() -> None:
    t = CallerTurnTracker(-40.0, start_ms=60, hangover_ms=200)
    feed(t, [LOUD] * 10)
    feed(t, [QUIET] * 10, start=0.2)              # exactly the hangover: still SPEAKING
    assert t.state is CallerState.SPEAKING
    t.push(QUIET, 0.42)
    assert t.state is CallerState.STOPPING
    assert t.silence_ms == 220
    t.push(LOUD, 0.44)                            # speech resumes
    assert t.state is CallerState.SPEAKING and t.silence_ms == 0
    feed(t, [QUIET] * 100, start=0.44)
    assert t.state is CallerState.STOPPING        # only the endpointer ends an utterance
    t.reset()
    assert t.state is CallerState.QUIET and t.voiced_ms == 0


def test_threshold_is_inclusive() -> None:
    t = CallerTurnTracker(-40.0)
    assert t.is_voiced(-40.0) and not t.is_voiced(-40.1)


def test_guard_needs_min_voiced_time() -> None:
    g = BargeInGuard(min_speech_ms=200)
    assert not g.should_interrupt(allow_barge_in=True, voiced_ms=180, partial="agente")
    assert g.should_interrupt(allow_barge_in=True, voiced_ms=200, partial="agente")


def test_guard_without_words_needs_three_times_longer() -> None:
    g = BargeInGuard(min_speech_ms=200)
    assert not g.should_interrupt(allow_barge_in=True, voiced_ms=400, partial="")
    assert not g.should_interrupt(allow_barge_in=True, voiced_ms=400, partial="[unk]")
    assert g.should_interrupt(allow_barge_in=True, voiced_ms=600, partial="")


def test_guard_respects_per_prompt_disable() -> None:
    g = BargeInGuard(min_speech_ms=200)
    assert not g.should_interrupt(allow_barge_in=False, voiced_ms=5000, partial="agente")


# ---- recorded frame sequences ------------------------------------------------------------------------------

def run_frames(pcm: bytes, threshold_db: float = -40.0) -> tuple[CallerTurnTracker, list[CallerState], int]:
    t = CallerTurnTracker(threshold_db)
    states, max_voiced = [], 0
    for frame in frames_of(pcm):
        t.push(energy_db(frame.pcm), frame.timestamp)
        states.append(t.state)
        max_voiced = max(max_voiced, t.voiced_ms if t.in_utterance else 0)
    return t, states, max_voiced


def test_real_speech_is_confirmed_and_long_enough_to_barge_in() -> None:
    t, states, voiced = run_frames(silence(300) + speech("안녕하세요 상담원 연결해 주세요") + silence(600))
    assert CallerState.SPEAKING in states
    assert t.state is CallerState.STOPPING
    assert voiced >= 600
    assert BargeInGuard(200).should_interrupt(allow_barge_in=True, voiced_ms=voiced, partial="")


def test_click_never_becomes_speech() -> None:
    t, states, voiced = run_frames(silence(200) + click() + silence(400))
    assert CallerState.SPEAKING not in states
    assert t.state is CallerState.QUIET
    assert voiced <= 40


def test_cough_is_speech_to_the_vad_but_not_enough_to_barge_in() -> None:
    _, states, voiced = run_frames(silence(200) + cough() + silence(400))
    assert CallerState.SPEAKING in states
    assert voiced < 200
    assert not BargeInGuard(200).should_interrupt(allow_barge_in=True, voiced_ms=voiced, partial="")


def test_silence_and_low_line_noise_stay_quiet() -> None:
    from testkit.fakes import noise
    _, states, _ = run_frames(silence(500) + noise(2000, -55.0))
    assert set(states) == {CallerState.QUIET}

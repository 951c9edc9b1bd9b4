"""The suite's parts without a call: every shipped script loads, bad scripts say what is wrong, the channel
model and the report do what they claim."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testkit import human_speech as hs
from testkit.voice_eval.audio import GROUP_PAUSE_MS, lose_packets, reference_text, render
from testkit.voice_eval.report import format_text, summary, write_html
from testkit.voice_eval.runner import ScriptResult, TurnResult, fold
from testkit.voice_eval.script import Channel, ScriptError, ScriptTurn, load_script, load_scripts
from tests.voice.conftest import SCRIPTS

needs_sounds = pytest.mark.skipif(hs.missing_reason() is not None, reason=hs.missing_reason() or "")


def test_every_shipped_script_loads_and_checks_something() -> None:
    scripts = load_scripts([SCRIPTS])
    assert len(scripts) >= 8
    assert all(s.expect for s in scripts)
    smoke = [s for s in scripts if "smoke" in s.tags]
    assert {"keypad-status", "spoken-status", "barge-in-greeting"} <= {s.name for s in smoke}


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nturns: [{dtmf: '1'}]\n", "expect: a non-empty mapping"),
    ("name: x\nturns: [{sing: la}]\nexpect: {reply_audio: true}\n", "unknown key(s) ['sing']"),
    ("name: x\nturns: [{dtmf: '1', say: hola}]\nexpect: {reply_audio: true}\n", "exactly one of"),
    ("name: x\nturns: [{dtmf: '1'}]\nexpect: {barge_in: {turn: 1, within_ms: 900}}\n", "a turn that has barge_s"),
    ("name: x\nturns: [{pause: 0}]\nexpect: {reply_audio: true}\n", "pause: seconds"),
    ("name: x\nchannel: {loss: 0.9}\nturns: [{dtmf: '1'}]\nexpect: {reply_audio: true}\n", "channel.loss"),
    ("name: x\nturns: [{dtmf: '1'}]\nexpect: {status_read: yes please}\n", "true or false"),
    ("name: x\nturns: [{dtmf: '1'}]\nexpect: {caller_turns: 0}\n", "expect.caller_turns"),
    ("- just a list\n", "a mapping with name"),
    ("name: [unclosed\n", "cannot read"),
])
def test_bad_scripts_are_named_with_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert str(path) in str(info.value) and message in str(info.value)


@needs_sounds
def test_rendered_turn_is_the_human_speech_through_the_channel() -> None:
    turn = ScriptTurn("digits", "305")
    clean = render(turn, Channel(mulaw=False))
    assert reference_text(turn) == "tres cero cinco"
    assert clean.startswith(b"\x00\x00" * 2000)                 # 300 ms lead-in of silence at 8 kHz
    assert hs.splice_digits("305", gap_ms=150) in clean
    grouped = render(ScriptTurn("digits", "30 5"), Channel(mulaw=False))   # a space: a pause between groups
    pause = b"\x00\x00" * (8000 * GROUP_PAUSE_MS // 1000)
    assert hs.splice_digits("30", gap_ms=150) + pause + hs.splice_digits("5", gap_ms=150) in grouped
    assert reference_text(ScriptTurn("digits", "30 5")) == "tres cero cinco"
    lined = render(turn, Channel(mulaw=True))
    assert lined == hs.mulaw_channel(clean)
    noisy = np.frombuffer(render(turn, Channel(mulaw=False, snr_db=10)), dtype="<i2").astype(float)
    noise = noisy - np.frombuffer(clean, dtype="<i2")
    assert hs.speech_level_db(clean) - 10 * np.log10(np.mean(noise ** 2) / 32768 ** 2) == pytest.approx(10, abs=1)


def test_packet_loss_silences_whole_packets_at_the_rate_asked() -> None:
    pcm = (np.ones(8000 * 20, dtype="<i2") * 1000).tobytes()         # 20 s = 1000 packets
    out = np.frombuffer(lose_packets(pcm, 0.1, seed=4), dtype="<i2").reshape(-1, 160)
    lost = np.all(out == 0, axis=1)
    assert np.all((out == 0) | (out == 1000)) and np.all(out[lost] == 0)
    assert 70 <= lost.sum() <= 130


def test_report_lists_long_utterances_and_draws_a_chart_per_metric(tmp_path: Path) -> None:
    ok = ScriptResult("a", "mulaw", success=True, call_id="c1",
                      turns=[TurnResult("digits", "3", 640.0, 30.0, "tres", "tres", 0, 1)],
                      utterances=[(9.0, "Bienvenido"), (31.5, "Su trámite ... Estado: en revisión")])
    bad = ScriptResult("b", "mulaw", success=False, failures=["the portal never said 'folio'"],
                       turns=[TurnResult("digits", "12", 900.0, None, "uno dos", "uno", 1, 2)])
    skipped = ScriptResult("c", "mulaw", skipped="needs a Spanish recognizer")
    figures = summary([ok, bad, skipped])
    assert (figures["calls"], figures["succeeded"], figures["skipped"]) == (2, 1, 1)
    assert figures["wer"] == pytest.approx(1 / 3) and figures["long_utterances"] == 1
    text = format_text([ok, bad, skipped])
    assert "task success 1/2 (50 %)" in text and "31.5 s  a: Su trámite" in text and "SKIP c" in text
    path = tmp_path / "r.html"
    write_html([ok, bad, skipped], path)
    page = path.read_text()
    assert page.count("<svg") == 4 and "Estado: en revisión" in page and "<script" not in page and "src=" not in page
    assert fold("Trámite ÉXITO") == "tramite exito"

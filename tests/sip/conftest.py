"""Fixtures for the SIP edge tests: one demo worker per module, generated pcaps, leak checks after each test."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import pcaps
from tests.sip.harness import Worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real `veratur ivr --app demo` (media timeout 4 s, transfer timeout 2 s, 300 ms ringing) shared by a module's tests."""
    w = Worker(tmp_path_factory.mktemp("worker")).start()
    yield w
    code = w.stop()
    log = w.log()
    assert code == 0, f"worker exit code {code}\n{log[-3000:]}"
    for bad in ("Traceback", "Assertion", "Segmentation", "Aborted"):
        assert bad not in log, f"{bad} in the worker log:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PCMU 20 ms pcaps: a 0.6 s 'utterance' between silences, RFC 4733 digits '59' and '0'."""
    d = tmp_path_factory.mktemp("pcap")
    speech = pcaps.silence_pcm(0.2) + pcaps.tone_pcm(300, 0.6) + pcaps.silence_pcm(0.6)
    return {
        "SPEECH_PCAP": str(pcaps.write_pcmu_pcap(d / "speech.pcap", speech)),
        "SPEECH_MS": "1400",
        "DTMF_PCAP": str(pcaps.write_dtmf_pcap(d / "dtmf59.pcap", "59", after_s=len(speech) / 16000)),
        "DTMF_MS": "900",
        "DTMF0_PCAP": str(pcaps.write_dtmf_pcap(d / "dtmf0.pcap", "0")),
    }


@pytest.fixture
def sipp_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def serves(worker: Worker, media: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """`serves()`: a normal sipp call (speech, RFC 4733, INFO, BYE) succeeds and leaves the worker idle."""
    from tests.sip.harness import sipp

    def check() -> None:
        before = worker.metrics().get("veratur_sip_dtmf_digits_total", 0)
        proc = sipp("uac_media", worker.hostport, tmp_path, media, test="serves")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        m = worker.wait_idle()
        assert m["veratur_sip_dtmf_digits_total"] - before == 3       # 5, 9 by RFC 4733 and 7 by SIP INFO
    return check

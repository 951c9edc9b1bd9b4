"""Model fetch over real HTTP (a local server on 127.0.0.1): progress, SHA-256 verification, atomic unpack,
offline and bad-archive errors; `locate()` for the configured model names; the `veratur models` CLI."""
from __future__ import annotations

import argparse
import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import voice_models
from foundation.config import Settings
from voice_models import ChecksumError, ModelError, ModelMissing, ModelSpec, ModelUnavailable, fetch, locate
from voice_models import cli as models_cli

NAME = "vosk-model-small-es-0.42"


def model_zip(name: str = NAME, *, extra: dict[str, bytes] | None = None, layout: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if layout:
            zf.writestr(f"{name}/am/final.mdl", b"\x00" * 50_000)
            zf.writestr(f"{name}/graph/HCLr.fst", b"fst")
            zf.writestr(f"{name}/conf/model.conf", b"--sample-frequency=16000\n")
        for path, data in (extra or {}).items():
            zf.writestr(path, data)
    return buf.getvalue()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


class Bar:
    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        BARS.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


BARS: list[Bar] = []


def spec(url: str, sha: str | None, size: int | None = None) -> ModelSpec:
    return ModelSpec(key="es", name=NAME, url=url, sha256=sha, size_bytes=size)


def test_fetch_verifies_and_unpacks_with_progress(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    data = model_zip()
    (www / "m.zip").write_bytes(data)
    dest = tmp_path / "models"
    BARS.clear()
    path = fetch(spec(f"{base}/m.zip", hashlib.sha256(data).hexdigest()), root=dest, progress=Bar)
    assert path == dest / NAME and (path / "am" / "final.mdl").is_file()
    assert BARS[0].total == len(data) and BARS[0].n == len(data) and BARS[0].closed
    assert list((dest / "downloads").iterdir()) == []
    assert sorted(p.name for p in dest.iterdir()) == ["downloads", NAME]     # no temporary directory left
    assert locate("es", root=dest) == path
    # Fetching again replaces the model atomically.
    assert fetch(spec(f"{base}/m.zip", hashlib.sha256(data).hexdigest()), root=dest, progress=None) == path


def test_bad_hash_is_refused_and_deleted(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    (www / "m.zip").write_bytes(model_zip())
    dest = tmp_path / "models"
    with pytest.raises(ChecksumError, match="does not match the pinned"):
        fetch(spec(f"{base}/m.zip", "0" * 64), root=dest, progress=None)
    assert not (dest / NAME).exists()
    assert list((dest / "downloads").iterdir()) == []


def test_unpinned_hash_needs_the_operator(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    data = model_zip()
    (www / "m.zip").write_bytes(data)
    dest = tmp_path / "models"
    with pytest.raises(ChecksumError) as err:
        fetch(spec(f"{base}/m.zip", None), root=dest, progress=None)
    assert hashlib.sha256(data).hexdigest() in str(err.value) and "--trust-download-hash" in str(err.value)
    assert not (dest / NAME).exists()
    assert (dest / "downloads" / f"{NAME}.zip").read_bytes() == data        # kept for inspection
    path = fetch(spec(f"{base}/m.zip", None), root=dest, progress=None, trust_download_hash=True)
    assert (path / "am" / "final.mdl").is_file()


def test_offline_error_says_what_to_place_where(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # closed again: nothing listens there
    with pytest.raises(ModelUnavailable) as err:
        fetch(spec(f"http://127.0.0.1:{port}/m.zip", None), root=tmp_path, progress=None, timeout=5)
    message = str(err.value)
    assert "cannot download" in message and str(tmp_path / NAME / "am" / "final.mdl") in message


def test_http_404_is_unavailable(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(ModelUnavailable, match="404|Not Found"):
        fetch(spec(f"{base}/missing.zip", None), root=tmp_path, progress=None)


@pytest.mark.parametrize(("payload", "match"), [
    (model_zip(extra={"../evil.txt": b"x"}), "outside the model directory"),
    (model_zip(layout=False, extra={"README": b"hi"}), "holds no Vosk model"),
    (b"this is not a zip", "not a zip"),
])
def test_bad_archives_are_refused(server: tuple[str, Path], tmp_path: Path, payload: bytes, match: str) -> None:
    base, www = server
    (www / "m.zip").write_bytes(payload)
    with pytest.raises(ModelError, match=match):
        fetch(spec(f"{base}/m.zip", hashlib.sha256(payload).hexdigest()), root=tmp_path, progress=None)
    assert not (tmp_path / NAME).exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_locate_names(tmp_path: Path) -> None:
    ko = locate("ko-test")
    assert (ko / "am" / "final.mdl").is_file()
    assert locate(str(ko)) == ko                                   # a directory path
    with pytest.raises(ModelMissing, match="veratur models fetch"):
        locate("es", root=tmp_path)
    with pytest.raises(ModelMissing, match="not a Vosk model directory"):
        locate(str(tmp_path))


def test_catalog_pins_the_production_model() -> None:
    catalog = voice_models.load_catalog()
    es = catalog["es"]
    assert es.name == NAME and es.url == "https://alphacephei.com/vosk/models/vosk-model-small-es-0.42.zip"
    assert es.sha256 is not None and len(es.sha256) == 64 and es.size_bytes == 39817833


def test_wrong_size_is_refused(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    data = model_zip()
    (www / "m.zip").write_bytes(data)
    with pytest.raises(ChecksumError, match=f"received {len(data)} bytes, expected {len(data) + 1}"):
        fetch(spec(f"{base}/m.zip", hashlib.sha256(data).hexdigest(), len(data) + 1), root=tmp_path, progress=None)
    assert not (tmp_path / NAME).exists()


def test_official_pin_refuses_a_different_archive(server: tuple[str, Path], tmp_path: Path) -> None:
    """The catalog entry as shipped, pointed (like a mirror) at an archive that is not the official one."""
    base, www = server
    (www / "m.zip").write_bytes(model_zip())
    with pytest.raises(ChecksumError):
        fetch(voice_models.load_catalog()["es"], root=tmp_path, url=f"{base}/m.zip", progress=None)
    assert not (tmp_path / NAME).exists()


def test_cli_fetch_and_list(server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, www = server
    data = model_zip()
    (www / "m.zip").write_bytes(data)
    parser = argparse.ArgumentParser()
    models_cli.add_arguments(parser)
    # --model es: the default model of `models fetch` is Whisper base now (asr.engine auto)
    args = parser.parse_args(["fetch", "--model", "es", "--url", f"{base}/m.zip", "--sha256", hashlib.sha256(data).hexdigest(),
                              "--dir", str(tmp_path)])
    assert models_cli.run(Settings(), args) == 0
    assert (tmp_path / NAME / "am" / "final.mdl").is_file()
    args = parser.parse_args(["fetch", "--model", "es", "--if-missing", "--url", f"{base}/nothing.zip",
                              "--dir", str(tmp_path)])
    assert models_cli.run(Settings(), args) == 0                  # already there: no download attempted
    args = parser.parse_args(["fetch", "--model", "es", "--url", f"{base}/m.zip", "--dir", str(tmp_path / "other")])
    assert models_cli.run(Settings(), args) == 1                  # not the pinned official archive
    assert "expected 39817833" in capsys.readouterr().err
    assert models_cli.run(Settings(), parser.parse_args(["list"])) == 0
    assert "ko-test" in capsys.readouterr().out

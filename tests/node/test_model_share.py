"""Model distribution to dialogue nodes: the admin node's `GET /rasa/model` (veratur.model_share) and the dialogue
node's fetch (veratur.model_sync), over real HTTP on loopback. Loading a fetched model into a running Rasa is in
tests/dialogs/test_rasa_failover.py (real Rasa)."""
from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from case_bridge.web.security import SETTINGS
from foundation.config import ConfigError
from tests.node.test_units import settings
from veratur import model_share, model_sync
from veratur.rasa_server import free_port

TOKEN = "t0ken-for-the-dialogue-nodes"
NAME = "veratur-0123456789abcdef.tar.gz"


def fake_model(path: Path, *, metadata: bool = True) -> Path:
    """A gzip'd tar shaped like a Rasa model (metadata.json at its root): what the checks look at."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in ((("metadata.json", json.dumps({"assistant_id": "veratur"}).encode()),) if metadata
                           else ()) + (("components/x.bin", b"\0" * 2048),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


async def serve(app_settings, live: list[Path | None]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app[SETTINGS] = app_settings
    app[model_share.LIVE_MODEL] = lambda: live[0]
    model_share.setup(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}{model_share.MODEL_PATH}"


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[tuple[str, list[Path | None], Path]]:
    published = tmp_path / "admin-models"
    published.mkdir()
    live: list[Path | None] = [fake_model(published / NAME)]
    runner, url = await serve(settings(tmp_path, dialogue__model_share_token=TOKEN), live)
    yield url, live, published
    await runner.cleanup()


def node_settings(tmp_path: Path, url: str, token: str | None = TOKEN):
    env = {"dialogue__model_source": url} | ({"dialogue__model_share_token": token} if token else {})
    return settings(tmp_path, **env)


async def test_the_live_model_needs_the_token_and_is_named(source, tmp_path: Path) -> None:
    url, live, published = source
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 403
        assert (await client.get(url, headers={"Authorization": "Bearer wrong-token-of-length"})).status_code == 403
        ok = await client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.headers["X-Veratur-Model"] == NAME
        assert ok.content == (published / NAME).read_bytes()
        same = await client.get(url, headers={"Authorization": f"Bearer {TOKEN}", "If-None-Match": f'"{NAME}"'})
        assert same.status_code == 304 and not same.content
        live[0] = None
        assert (await client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 404


async def test_without_a_token_only_loopback_gets_the_model(tmp_path: Path) -> None:
    live: list[Path | None] = [fake_model(tmp_path / NAME)]
    runner, url = await serve(settings(tmp_path), live)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200      # this client is on 127.0.0.1
    finally:
        await runner.cleanup()


async def test_a_dialogue_node_fetches_a_new_model_once(source, tmp_path: Path) -> None:
    url, live, published = source
    models = tmp_path / "node-models"
    cfg = node_settings(tmp_path, url)
    got = await _fetch(cfg, models, have="veratur-ffffffffffffffff.tar.gz")
    assert got == models / NAME and got.read_bytes() == (published / NAME).read_bytes()
    assert await _fetch(cfg, models, have=NAME) is None                     # 304: nothing new
    assert [p.name for p in models.iterdir()] == [NAME]                    # no temporary file left


async def test_what_is_not_a_model_is_refused_and_not_kept(source, tmp_path: Path) -> None:
    url, live, published = source
    models = tmp_path / "node-models"
    cfg = node_settings(tmp_path, url)
    broken = published / "veratur-aaaaaaaaaaaaaaaa.tar.gz"
    broken.write_bytes(gzip.compress(b"not a tar at all") [:20])            # a cut download
    live[0] = broken
    with pytest.raises(model_sync.ModelFetchError):
        await _fetch(cfg, models)
    live[0] = fake_model(published / "veratur-bbbbbbbbbbbbbbbb.tar.gz", metadata=False)
    with pytest.raises(model_sync.ModelFetchError, match="metadata"):
        await _fetch(cfg, models)
    live[0] = shutil.copyfile(published / NAME, published / "not-a-model-name.tar.gz")
    async with httpx.AsyncClient() as client:                               # the source never names it
        resp = await client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 404
    assert not models.exists() or not any(models.iterdir())
    with pytest.raises(httpx.HTTPStatusError):                              # a node with the wrong token
        await _fetch(node_settings(tmp_path, url, token="another-token-0123456"), models)


async def test_a_dialogue_node_starts_on_its_newest_model_when_the_source_is_away(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    models = tmp_path / "node-models"
    models.mkdir()
    newest = fake_model(models / NAME)
    monkeypatch.setattr(model_sync.training, "MODELS_DIR", models)
    monkeypatch.setattr(model_sync.training, "latest_model", lambda models_dir=models: newest)
    cfg = node_settings(tmp_path, f"http://127.0.0.1:{free_port()}{model_share.MODEL_PATH}")   # nothing listens
    import asyncio
    assert await asyncio.to_thread(model_sync.model_at_start, cfg) == newest


def test_the_settings_check_the_source_and_the_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_source"):
        settings(tmp_path, dialogue__model_source="ftp://admin/model")
    with pytest.raises(ConfigError, match="model_share_token"):
        settings(tmp_path, dialogue__model_share_token="short")
    with pytest.raises(ConfigError, match="rasa_failover_urls"):
        settings(tmp_path, dialogue__rasa_failover_urls='["http://a:5005", "http://a:5005"]')
    ok = settings(tmp_path, dialogue__rasa_failover_urls='["http://10.0.0.8:5005/"]')
    assert ok.dialogue.rasa_urls() == ["http://127.0.0.1:5005", "http://10.0.0.8:5005"]


async def _fetch(cfg, models: Path, have: str | None = None) -> Path | None:
    import asyncio
    return await asyncio.to_thread(model_sync.fetch_model, cfg, models, have)


async def test_each_poll_loads_a_new_model_into_the_running_rasa(source, tmp_path: Path) -> None:
    """`sync_once` against a stand-in for Rasa's /status and PUT /model (the seam: loading a model into a real
    running Rasa with PUT /model is tests/admin/test_browser_apply.py's live swap)."""
    import asyncio

    url, live, published = source
    state = {"model_file": "/srv/models/veratur-ffffffffffffffff.tar.gz", "puts": []}

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"model_file": state["model_file"]})

    async def put_model(request: web.Request) -> web.Response:
        body = await request.json()
        state["puts"].append(body["model_file"])
        state["model_file"] = body["model_file"]
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_put("/model", put_model)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        models = tmp_path / "node-models"
        cfg = node_settings(tmp_path, url)
        rasa = f"http://127.0.0.1:{port}"
        loaded = await asyncio.to_thread(model_sync.sync_once, cfg, rasa, models)
        assert loaded == models / NAME and state["puts"] == [str(models / NAME)]
        assert await asyncio.to_thread(model_sync.sync_once, cfg, rasa, models) is None   # runs it already
        assert state["puts"] == [str(models / NAME)]
    finally:
        await runner.cleanup()
    # Rasa down: the poll still fetches, so the node's Rasa starts on the new model
    live[0] = fake_model(published / "veratur-cccccccccccccccc.tar.gz")
    dead = f"http://127.0.0.1:{free_port()}"
    assert await asyncio.to_thread(model_sync.sync_once, cfg, dead, models) is None
    assert (models / "veratur-cccccccccccccccc.tar.gz").exists()

"""A dialogue node keeps its Rasa on the model the admin node serves (`veratur.model_share`).

`fetch_model` asks `dialogue.model_source` for the live model, naming the one this node has (`If-None-Match`), and
stores a new one in dialogs/models only after checking it: the name must be a model's name and the file a whole
gzip'd tar with Rasa's metadata. `veratur rasa` calls it once before starting Rasa (so a restarted dialogue node
starts on the live model, and on its own newest one when the source does not answer); the supervisor's
`keep_synced` then polls every `dialogue.model_sync_interval_s` and loads a new model into the running Rasa with
`PUT /model`, which lets the turn in progress finish on the old one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tarfile
import tempfile
from pathlib import Path

import httpx

from foundation.config import Settings
from foundation.logs import kv
from veratur import training
from veratur.model_share import MODEL_NAME

log = logging.getLogger("veratur.model_sync")

FETCH_TIMEOUT_S = 60.0
MAX_MODEL_BYTES = 512 * 1024 * 1024
"""A model is ~20-60 MB; anything far larger is not one of ours and is not written to disk."""


class ModelFetchError(Exception):
    """The source answered something that is not a model."""


def _headers(settings: Settings, have: str | None) -> dict[str, str]:
    headers = {"User-Agent": "veratur-model-sync"}
    token = settings.dialogue.model_share_token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if have:
        headers["If-None-Match"] = f'"{have}"'
    return headers


def _check_model(path: Path) -> None:
    try:
        with tarfile.open(path, "r:gz") as archive:
            names = archive.getnames()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelFetchError(f"not a gzip'd tar: {exc}") from exc
    if not any(Path(name).name == "metadata.json" for name in names):
        raise ModelFetchError("the archive has no Rasa metadata.json")


def fetch_model(settings: Settings, models_dir: Path = training.MODELS_DIR,
                have: str | None = None) -> Path | None:
    """The live model from `dialogue.model_source`, stored in `models_dir`; None when this node has it already.
    Raises httpx.HTTPError (source away) or ModelFetchError (an answer that is not a model)."""
    source = settings.dialogue.model_source
    if not source:
        return None
    with httpx.stream("GET", source, headers=_headers(settings, have), timeout=FETCH_TIMEOUT_S) as resp:
        if resp.status_code == 304:
            return None
        resp.raise_for_status()
        name = resp.headers.get("X-Veratur-Model", "")
        if not MODEL_NAME.match(name):
            raise ModelFetchError(f"the source named no model ({name[:80]!r})")
        target = models_dir / name
        if target.exists():
            return target if name != have else None
        models_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".fetch-", suffix=".tar.gz")
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > MAX_MODEL_BYTES:
                        raise ModelFetchError(f"larger than {MAX_MODEL_BYTES} bytes")
                    out.write(chunk)
            _check_model(Path(tmp))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    log.info(kv(event="model_fetched", model=name, bytes=size))
    return target


def model_at_start(settings: Settings) -> Path | None:
    """For `veratur rasa` on a dialogue node: the source's live model if it answers, else the newest here."""
    newest = training.latest_model()
    try:
        fetched = fetch_model(settings, have=newest.name if newest else None)
    except (httpx.HTTPError, ModelFetchError) as exc:
        log.warning(kv(event="model_fetch_failed", source=settings.dialogue.model_source,
                       error=f"{type(exc).__name__}: {exc}"[:200], using=newest.name if newest else "-"))
        return newest
    return fetched or newest


async def keep_synced(settings: Settings, rasa_url: str) -> None:
    """Poll the source; load each new model into the Rasa at `rasa_url`. Runs until cancelled."""
    while True:
        await asyncio.sleep(settings.dialogue.model_sync_interval_s)
        try:
            await asyncio.to_thread(sync_once, settings, rasa_url)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any bad answer; the next poll retries
            log.warning(kv(event="model_sync_failed", error=f"{type(exc).__name__}: {exc}"[:200]))


def sync_once(settings: Settings, rasa_url: str, models_dir: Path = training.MODELS_DIR) -> Path | None:
    """One poll: the model loaded into Rasa now, or None when there was nothing new (or Rasa is not up: it
    starts on the newest model here, which this poll has fetched)."""
    from veratur.flows.model import loaded_model, swap_model

    running = loaded_model(rasa_url)
    if running is None:
        newest = training.latest_model(models_dir)
        fetch_model(settings, models_dir, have=newest.name if newest else None)
        return None
    model = fetch_model(settings, models_dir, have=running if running.endswith(".tar.gz") else f"{running}.tar.gz")
    if model is None:
        return None
    swap_model(rasa_url, model)
    log.info(kv(event="model_loaded", model=model.name, rasa=rasa_url))
    training.prune_models(models_dir)
    return model

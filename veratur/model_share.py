"""`GET /rasa/model`: the live dialogue model, for the dialogue nodes to fetch (`veratur.model_sync`).

Flows are applied on the node that runs the web app (the admin pages); the model an apply trains lands in its
dialogs/models under the content hash of the live files. Dialogue nodes on other hosts fetch that model from here
at start and every `dialogue.model_sync_interval_s`, so every Rasa server behind the media nodes runs what the
administrator applied. The model's file name is its identity: the response carries it in `X-Veratur-Model` and as
the ETag, and a request whose `If-None-Match` names it gets 304 without a body.

Only a caller with `Authorization: Bearer <dialogue.model_share_token>` gets it; with no token configured, only
loopback callers do (the model holds the NLU examples and every response text of the portal).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from veratur import training

MODEL_PATH = "/rasa/model"
MODEL_NAME = re.compile(rf"^{re.escape(training.MODEL_PREFIX)}[0-9a-f]{{{training.HASH_CHARS}}}\.tar\.gz$")
LIVE_MODEL: web.AppKey[Callable[[], Path | None]] = web.AppKey("live_model")


def live_model() -> Path | None:
    """The model of the live files if it is trained, else the newest one there is."""
    current = training.model_path()
    return current if current.exists() else training.latest_model()


def _authorized(request: web.Request, token: str | None) -> bool:
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def serve_model(request: web.Request) -> web.StreamResponse:
    from case_bridge.web.security import SETTINGS

    if not _authorized(request, request.app[SETTINGS].dialogue.model_share_token):
        raise web.HTTPForbidden(text="model sharing needs dialogue.model_share_token\n")
    model = await asyncio.to_thread(request.app.get(LIVE_MODEL, live_model))
    if model is None or not MODEL_NAME.match(model.name):
        raise web.HTTPNotFound(text="no trained model on this node\n")
    headers = {"ETag": f'"{model.name}"', "X-Veratur-Model": model.name, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match", "").strip() in (f'"{model.name}"', model.name):
        return web.Response(status=304, headers=headers)
    try:
        handle = model.open("rb")
    except OSError:
        raise web.HTTPNotFound(text="the model was removed meanwhile\n") from None
    headers["Content-Disposition"] = f'attachment; filename="{model.name}"'
    return web.Response(body=handle, content_type="application/gzip", headers=headers)


def setup(app: web.Application) -> None:
    """Mount the route in the web app (`veratur.webapp.ROUTE_MODULES` entry)."""
    app.router.add_get(MODEL_PATH, serve_model)

"""End to end in Chromium against a real Rasa: an administrator logs in, changes the greeting response and adds
an NLU example, sees the validation error of a broken line, fixes it and applies. The candidate is validated
(incl. `rasa data validate`), trained (or taken from the model cache by content hash), tested with
`rasa test core`, and swapped into the running Rasa with `PUT /model`: a conversation started before the apply
keeps its state and finishes, a conversation started after it hears the new greeting.

One training at most per content (the base tree's model is the repository's cached model; the candidate's is
cached under its hash for the next run)."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.admin.rasa_stack import SwappableRasa
from tests.admin.webapp_env import PASSWORD, admin_app, case_service
from veratur.config import Settings
from veratur.flows.model import loaded_model, train_candidate
from veratur.flows.service import FlowService
from veratur.flows.store import RevisionStore
from veratur.rasa_server import free_port

pytestmark = [pytest.mark.rasa, pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

OLD_GREETING = "Bienvenido a Veratur, el portal telefónico de Veracruz."
NEW_GREETING = "Hola, le atiende Veratur, la nueva línea ciudadana de Veracruz."
NEW_EXAMPLE = "      - qué onda, buen día"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]


async def _set_text(source, text: str) -> None:
    """Replace the editor's text as typing would (an `input` event). Playwright's fill() stalls on textareas
    of ~40 kB (nlu.yml) in Debian's Chromium, so the value is set in the page and the event dispatched."""
    await source.evaluate("(e, v) => { e.focus(); e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }",
                          text)


def _say(url: str, sender: str, message: str) -> list[str]:
    resp = httpx.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": message}, timeout=60)
    resp.raise_for_status()
    return [m.get("text", "") for m in resp.json()]


def _user_texts(url: str, sender: str) -> list[str]:
    tracker = httpx.get(f"{url}/conversations/{sender}/tracker", timeout=30).json()
    return [e.get("text") for e in tracker["events"] if e.get("event") == "user"]


@pytest.fixture
def rasa(live_tree: Path, tmp_path: Path):
    model = train_candidate(live_tree, print)           # the repository's cached model for this content
    stack = SwappableRasa(model, tmp_path / "rasa").start()
    yield stack
    stack.stop()


async def test_admin_edits_validates_applies_and_rasa_swaps(live_tree: Path, settings: Settings, tmp_path: Path,
                                                            rasa: SwappableRasa, artifacts_dir: Path) -> None:
    from playwright.async_api import async_playwright

    assert OLD_GREETING in (live_tree / "dialogs/domain.yml").read_text(encoding="utf-8")
    service = FlowService(settings, live_root=live_tree, store=RevisionStore(tmp_path / "flows"), rasa_url=rasa.url)
    cases = case_service(tmp_path)
    cases.create_staff("ana", PASSWORD, "admin")
    runner = web.AppRunner(admin_app(settings, cases, service))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"

    # a caller's conversation that starts before the change
    before = await asyncio.to_thread(_say, rasa.url, "call-before", "hola")
    assert any(OLD_GREETING in t for t in before), before
    old_model = loaded_model(rasa.url)

    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(base + "/admin/flows")
            await page.fill("#usuario", "ana")           # the web app's staff login (redirected there)
            await page.fill("#contrasena", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector("text=dialogs/domain.yml")

            # 1. the greeting response
            await page.click("a:text-is('dialogs/domain.yml')")
            source = page.locator("#source")
            text = await source.input_value()
            await _set_text(source, text.replace(OLD_GREETING, NEW_GREETING, 1))
            # 2. an NLU example, first with a broken line
            await page.goto(base + "/admin/flows/edit?path=nlu_data/train/nlu.yml")
            text = await source.input_value()
            anchor = re.search(r"- intent: greet\n\s+examples: \|\n", text)
            assert anchor, "greet examples not found"
            broken = text[:anchor.end()] + NEW_EXAMPLE + "\n   - intent: [roto\n" + text[anchor.end():]
            await _set_text(source, broken)
            await page.click("#btn-validate")
            error = page.locator("#problems li.error").first
            await error.wait_for()
            message = await error.inner_text()
            line = text[:anchor.end()].count("\n") + 2
            assert f"nlu_data/train/nlu.yml:{line}:" in message and "YAML" in message, message
            assert await page.locator("#gutter .bad").count() >= 1
            await page.screenshot(path=str(artifacts_dir / "flows-validation-error.png"))
            # fixed
            await _set_text(source, text[:anchor.end()] + NEW_EXAMPLE + "\n" + text[anchor.end():])
            await page.click("#btn-validate")
            await page.wait_for_selector("#problems .ok")
            assert await page.locator("#pending-list li").count() == 2
            await page.click("#btn-diff")
            await page.wait_for_function("document.getElementById('diff').textContent.length > 0")
            diff = await page.locator("#diff").inner_text()
            assert f"+{NEW_EXAMPLE}" in diff and "+ " + NEW_GREETING[:20] not in diff

            await page.fill("#message", "saludo nuevo y un ejemplo de saludo informal")
            await page.click("#btn-apply")
            await page.wait_for_selector("#job-state.done, #job-state.failed, #job-state.rejected, "
                                         "#job-state.conflict", timeout=800_000)
            state = await page.locator("#job-state").inner_text()
            log = await page.locator("#job-log").inner_text()
            await page.screenshot(path=str(artifacts_dir / "flows-applied.png"))
            assert state.startswith("done"), f"{state}\n{log}"
            for stage in ("rasa_validate", "train", "test", "swap", "record"):
                assert f"{stage}:" in log, log
            await browser.close()
    finally:
        await runner.cleanup()
        cases.close()

    # live: files written, revision recorded, Rasa runs the new model
    assert NEW_GREETING in (live_tree / "dialogs/domain.yml").read_text(encoding="utf-8")
    assert NEW_EXAMPLE in (live_tree / "nlu_data/train/nlu.yml").read_text(encoding="utf-8")
    rev = service.store.head()
    assert rev is not None and rev.author == "ana" and rev.changed == ["dialogs/domain.yml", "nlu_data/train/nlu.yml"]
    assert loaded_model(rasa.url) != old_model and rev.model and rev.model.startswith(loaded_model(rasa.url) or "?")

    # the conversation begun before the apply goes on with its state, on the new model
    await asyncio.to_thread(_say, rasa.url, "call-before", "gracias")
    assert _user_texts(rasa.url, "call-before") == ["hola", "gracias"]
    # a conversation begun after it hears the new greeting
    after = await asyncio.to_thread(_say, rasa.url, "call-after", "hola")
    assert any(NEW_GREETING in t for t in after), after

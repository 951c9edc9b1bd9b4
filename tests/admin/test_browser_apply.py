"""End to end in Chromium, with a real Rasa and a real SIP worker: an administrator signs in to the web app,
changes the greeting response and adds an NLU example, sees the validation error of a broken line, fixes it and
applies. The candidate is validated (incl. `rasa data validate`), trained (or taken from the model cache by
content hash), tested with `rasa test core`, and swapped into the running Rasa with `PUT /model`:
- a SIP call placed before the apply stays up across the swap and finishes normally (its turns committed);
- a SIP call placed after it hears the new greeting (the committed transcript turn of the portal);
- a text conversation begun before keeps its tracker state on the new model.

Training is kept to one per content: the base tree's model is the repository's cached one and the candidate's is
trained once (before the browser part, so the apply's duration is predictable) and cached under its hash."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml
from aiohttp import web

from foundation.config import Settings
from foundation.paths import REPO_ROOT
from tests.admin.rasa_stack import SwappableRasa
from tests.admin.webapp_env import PASSWORD, admin_app, case_service
from tests.sip.harness import Worker, start_caller
from veratur.flows.model import loaded_model, train_candidate, write_catalog_lookups
from veratur.flows.service import FlowService
from veratur.flows.store import RevisionStore
from veratur.rasa_server import free_port

pytestmark = [pytest.mark.rasa, pytest.mark.browser, pytest.mark.sip, pytest.mark.slow, pytest.mark.timeout(1200)]



def _current_greeting() -> str:
    """The first sentence of the live utter_greet (the Rasa engineer may reword it; the test follows)."""
    domain = yaml.safe_load((REPO_ROOT / "dialogs" / "domain.yml").read_text(encoding="utf-8"))
    text = domain["responses"]["utter_greet"][0]["text"]
    return text.split(".")[0] + "."


OLD_GREETING = _current_greeting()
NEW_GREETING = "Hola, le atiende Veratur, la nueva línea ciudadana de Veracruz."
NEW_EXAMPLE = "      - qué onda, buen día"
GREET_EXAMPLES = re.compile(r"- intent: greet\n\s+examples: \|\n")
CALL_A_LIMIT_S = 1500
"""Call A stays silent from its greeting until the test has seen the swap (the caller's --until cue), then keys 1;
this bounds how long that may take (train + test + swap take 2-3 min on a quiet machine, far more on a loaded one)."""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]


def _with_edits(domain: str, nlu: str) -> tuple[str, str]:
    anchor = GREET_EXAMPLES.search(nlu)
    assert anchor, "greet examples not found in nlu.yml"
    return domain.replace(OLD_GREETING, NEW_GREETING, 1), nlu[:anchor.end()] + NEW_EXAMPLE + "\n" + nlu[anchor.end():]


async def _set_text(source, text: str) -> None:
    """Replace the editor's text as typing would (an `input` event). Playwright's fill() stalls on textareas
    of ~40 kB (nlu.yml) in Debian's Chromium, so the value is set in the page and the event dispatched."""
    await source.evaluate("(e, v) => { e.focus(); e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }",
                          text)


def _say(url: str, sender: str, message: str) -> list[str]:
    resp = httpx.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": message}, timeout=120)
    resp.raise_for_status()
    return [m.get("text", "") for m in resp.json()]


def _user_texts(url: str, sender: str) -> list[str]:
    tracker = httpx.get(f"{url}/conversations/{sender}/tracker", timeout=30).json()
    return [e.get("text") for e in tracker["events"] if e.get("event") == "user"]


@pytest.fixture
def rasa(live_tree: Path, tmp_path: Path):
    model = train_candidate(live_tree, print)           # the repository's cached model for this content
    # the candidate's model, trained now (once per content, then cached) so the apply below only validates,
    # tests and swaps
    candidate = tmp_path / "warm"
    shutil.copytree(live_tree, candidate)
    domain, nlu = _with_edits((candidate / "dialogs/domain.yml").read_text(encoding="utf-8"),
                              (candidate / "nlu_data/train/nlu.yml").read_text(encoding="utf-8"))
    (candidate / "dialogs/domain.yml").write_text(domain, encoding="utf-8")
    (candidate / "nlu_data/train/nlu.yml").write_text(nlu, encoding="utf-8")
    write_catalog_lookups(candidate)
    train_candidate(candidate, print)
    stack = SwappableRasa(model, tmp_path / "rasa").start()
    yield stack
    stack.stop()


def _bot_turns(cases, call_id: str) -> list[str]:
    return [t.text for t in cases.transcript(call_id) if t.speaker != "caller"]


def _wait_call_closed(cases, call_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        call = cases.get_call(call_id)
        if call is not None and call.ended_at is not None:
            return call
        time.sleep(0.5)
    raise AssertionError(f"call {call_id} not closed in the case record")


async def test_admin_edits_validates_applies_and_calls_hear_the_swap(
        live_tree: Path, settings: Settings, tmp_path: Path, rasa: SwappableRasa, artifacts_dir: Path) -> None:
    from playwright.async_api import async_playwright

    assert OLD_GREETING in (live_tree / "dialogs/domain.yml").read_text(encoding="utf-8")
    service = FlowService(settings, live_root=live_tree, store=RevisionStore(tmp_path / "flows"), rasa_url=rasa.url)
    cases = case_service(tmp_path)
    cases.create_staff("ana", PASSWORD, "admin")
    worker = Worker(tmp_path / "worker", app="engine", env={
        "VERATUR__ASR__MODEL": "ko-test", "VERATUR__DIALOGUE__RASA_URL": rasa.url,
        "VERATUR__DIALOGUE__TIMEOUT_S": "30",     # a turn that lands while Rasa loads the new model waits for it
        "VERATUR__DATABASE__URL": f"sqlite:///{tmp_path / 'case_bridge.db'}",
        "VERATUR__TURNS__NO_INPUT_TIMEOUT_S": "60", "VERATUR__TURNS__MAX_NO_INPUT": "10",
        "VERATUR__SIP__MEDIA_TIMEOUT_S": "30"})
    (tmp_path / "worker").mkdir()
    worker.start()
    runner = web.AppRunner(admin_app(settings, cases, service))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    call_before = None

    # a text conversation that starts before the change
    before = await asyncio.to_thread(_say, rasa.url, "chat-before", "hola")
    assert any(OLD_GREETING in t for t in before), before
    old_model = loaded_model(rasa.url)

    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(base + "/admin/flows")          # not signed in: the web app's staff login
            await page.fill("#usuario", "ana")
            await page.fill("#contrasena", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector("text=dialogs/domain.yml")

            # 1. the greeting response
            await page.click("a:text-is('dialogs/domain.yml')")
            source = page.locator("#source")
            domain_text = await source.input_value()
            # 2. an NLU example, first with a broken line
            await page.goto(base + "/admin/flows/edit?path=nlu_data/train/nlu.yml")
            nlu_text = await source.input_value()
            new_domain, new_nlu = _with_edits(domain_text, nlu_text)
            await page.goto(base + "/admin/flows/edit?path=dialogs/domain.yml")
            await _set_text(source, new_domain)
            await page.goto(base + "/admin/flows/edit?path=nlu_data/train/nlu.yml")
            anchor = GREET_EXAMPLES.search(nlu_text)
            assert anchor
            broken = nlu_text[:anchor.end()] + NEW_EXAMPLE + "\n   - intent: [roto\n" + nlu_text[anchor.end():]
            await _set_text(source, broken)
            await page.click("#btn-validate")
            error = page.locator("#problems li.error").first
            await error.wait_for()
            message = await error.inner_text()
            line = nlu_text[:anchor.end()].count("\n") + 2
            assert f"nlu_data/train/nlu.yml:{line}:" in message and "YAML" in message, message
            assert await page.locator("#gutter .bad").count() >= 1
            await page.screenshot(path=str(artifacts_dir / "flows-validation-error.png"))
            # fixed
            await _set_text(source, new_nlu)
            await page.click("#btn-validate")
            await page.wait_for_selector("#problems .ok")
            assert await page.locator("#pending-list li").count() == 2
            await page.click("#btn-diff")
            await page.locator("#diff .add").first.wait_for()      # (the app's CSP forbids wait_for_function)
            diff = await page.locator("#diff").inner_text()
            assert f"+{NEW_EXAMPLE}" in diff and NEW_GREETING in diff

            # call A: answered on the old model, still up while the apply runs and the model is swapped
            swap_seen = tmp_path / "swap-seen"
            call_before = start_caller(worker.uri, "--until", str(swap_seen), "--dtmf", "1",
                                       "--wait", "6", "--reply-timeout", "60")
            await page.fill("#message", "saludo nuevo y un ejemplo de saludo informal")
            await page.click("#btn-apply")
            await page.wait_for_selector("#job-state.done, #job-state.failed, #job-state.rejected, "
                                         "#job-state.conflict", timeout=900_000)
            state = await page.locator("#job-state").inner_text()
            log = await page.locator("#job-log").inner_text()
            await page.screenshot(path=str(artifacts_dir / "flows-applied.png"))
            assert state.startswith("done"), f"{state}\n{log}"
            for stage in ("rasa_validate", "train", "test", "swap", "record"):
                assert f"{stage}:" in log, log
            swapped_at = time.time()
            swap_seen.touch()                 # call A keys now, on the new model
            # try it in text: the candidate (this file, unchanged now) equals what is live, so the chat talks to
            # the live Rasa, which already runs the new model
            await page.click("#btn-try")
            await page.wait_for_selector("#job-state.done", timeout=300_000)
            assert "en vivo" in await page.locator("#chat-target").inner_text()
            await page.fill("#chat-input", "hola")
            await page.press("#chat-input", "Enter")
            await page.locator(".chat .bot", has_text=NEW_GREETING[:30]).first.wait_for(timeout=120_000)
            await browser.close()

        # live: files written, revision recorded, Rasa runs the new model
        assert NEW_GREETING in (live_tree / "dialogs/domain.yml").read_text(encoding="utf-8")
        assert NEW_EXAMPLE in (live_tree / "nlu_data/train/nlu.yml").read_text(encoding="utf-8")
        rev = service.store.head()
        assert rev is not None and rev.author == "ana"
        assert rev.changed == ["dialogs/domain.yml", "nlu_data/train/nlu.yml"]
        assert loaded_model(rasa.url) != old_model and rev.model and rev.model.startswith(loaded_model(rasa.url) or "?")

        # the text conversation begun before the apply goes on with its state, on the new model
        await asyncio.to_thread(_say, rasa.url, "chat-before", "gracias")
        assert _user_texts(rasa.url, "chat-before") == ["hola", "gracias"]

        # call B, placed after the apply, hears the new greeting
        call_after = start_caller(worker.uri, "--wait", "3")
        out_b, err_b = await asyncio.to_thread(call_after.communicate, timeout=120)
        assert call_after.returncode == 0, err_b[-3000:]
        (result_b,) = [json.loads(ln) for ln in out_b.splitlines() if ln.startswith("{")]
        assert result_b["greeting_start"] is not None
        greeting_b = _bot_turns(cases, result_b["call_id"])
        assert greeting_b and NEW_GREETING in greeting_b[0], greeting_b

        # call A finishes normally: old greeting, its key answered after the swap, its record closed
        out_a, err_a = await asyncio.to_thread(call_before.communicate, timeout=CALL_A_LIMIT_S)
        assert call_before.returncode == 0, err_a[-3000:]
        (result_a,) = [json.loads(ln) for ln in out_a.splitlines() if ln.startswith("{")]
        (keyed_turn,) = [t for t in result_a["turns"] if t["kind"] == "dtmf"]
        assert result_a["status"] == 200 and keyed_turn["reply_start"] is not None, result_a
        turns_a = cases.transcript(result_a["call_id"])
        bots_a = [t for t in turns_a if t.speaker != "caller"]
        assert OLD_GREETING in bots_a[0].text, [t.text for t in turns_a]
        keyed = [t for t in turns_a if t.speaker == "caller" and "1" in t.text]
        assert keyed and keyed[-1].at.timestamp() >= swapped_at - 5, (
            "call A keyed before the swap finished", [(t.speaker, t.text) for t in turns_a])
        assert any(t.at > keyed[-1].at for t in bots_a), "no reply committed after the key"
        call_a = await asyncio.to_thread(_wait_call_closed, cases, result_a["call_id"])
        assert call_a.disposition not in (None, "error"), call_a
        assert "Traceback" not in worker.log()
    finally:
        if call_before is not None and call_before.poll() is None:
            call_before.kill()
            call_before.wait()
        await runner.cleanup()
        worker.stop()
        cases.close()

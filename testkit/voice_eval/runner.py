"""Play one script as a real call (`veratur call`, the pjsua2 test caller, in its own process) against a running
node, then read what the node committed — the call record, the transcript, the case — and check the script's
expectations against it. Metrics per turn: latency from the end of the caller's speech (or last key) to the
first reply audio, the recognizer's text beside the reference (WER), and how long each reply played."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo, TurnView
from dialogs.catalog_seed import seed_demo
from foundation.paths import REPO_ROOT
from ivr.caller import trailing_silence_s, write_wav
from testkit import human_speech as hs
from testkit.voice_eval.audio import TAIL_MS, reference_text, render
from testkit.voice_eval.script import Script, ScriptTurn

CALL_TIMEOUT_S = 240
RECORD_WAIT_S = 15.0
LONG_UTTERANCE_S = 20.0
TRANSFER_WAIT_S = 15          # the transfer prompt plays out, then the REFER, the agent's answer and a few seconds
SECRET_MARKS = ("[verificación]", "[DTMF ****]")


@dataclass
class TurnResult:
    kind: str
    value: str                     # with variables filled (a PIN is shown as ****)
    latency_ms: float | None
    reply_s: float | None          # how long the reply audio lasted (to its first 0.9 s pause)
    reference: str = ""            # spoken turns: what the caller said
    heard: str | None = None       # what the recognizer committed (None: masked or not aligned)
    errors: int = 0
    words: int = 0
    portal_stopped_ms: float | None = None   # barge turns: portal silent this long after the caller began


@dataclass
class ScriptResult:
    name: str
    channel: str
    success: bool = False
    skipped: str = ""
    failures: list[str] = field(default_factory=list)
    call_id: str = ""
    turns: list[TurnResult] = field(default_factory=list)
    greeting_s: float | None = None
    portal_turns: list[str] = field(default_factory=list)
    utterances: list[tuple[float, str]] = field(default_factory=list)   # (seconds of audio, portal text)
    duration_s: float = 0.0
    recording: Path | None = None

    @property
    def wer_counts(self) -> tuple[int, int]:
        spoken = [t for t in self.turns if t.words]
        return sum(t.errors for t in spoken), sum(t.words for t in spoken)


@dataclass(frozen=True)
class Target:
    """A running node: its front door and its case database."""

    uri: str
    database_url: str
    spanish_speech: bool               # the node's recognizer understands Spanish
    redis_url: str | None = None
    agent: Any = None                  # an Agent (sipp) when the node transfers to one


def fold(text: str) -> str:
    """Lower case, accents removed: portal text is compared this way."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def _variables(script: Script, service: CaseService) -> dict[str, str]:
    if script.case == "none":
        return {}
    if script.case == "demo":
        folio, pin = seed_demo(service)
    else:
        tramites = [t for t in service.list_tramites() if "phone" in t.start_channels or not t.start_channels]
        if not tramites:
            raise RuntimeError("no trámite in the case database: seed the catalog (veratur db seed)")
        opened = service.open_case(tramites[0].id, "web", idempotency_key=f"voice-eval-{uuid.uuid4().hex}",
                                   citizen=CitizenInfo("Prueba de Voz", curp="VOZP800101HVZRRR01"))
        folio, pin = opened.case.folio, opened.pin
    # read in groups (a space is a pause, testkit.voice_eval.audio.GROUP_PAUSE_MS): 4+4 and 2+2
    return {"folio": folio, "pin": pin, "folio_spoken": " ".join(folio),
            "folio_grouped": f"{folio[:4]} {folio[4:]}", "pin_grouped": f"{pin[:2]} {pin[2:]}"}


def _fill(text: str, variables: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in variables:
            raise KeyError(f"unknown variable {{{key}}} (case: demo|fresh gives folio, pin, folio_spoken, folio_grouped, pin_grouped)")
        return variables[key]
    return re.sub(r"\{(\w+)\}", sub, text)


def _caller_args(script: Script, turns: list[ScriptTurn], work: Path) -> tuple[list[str], list[float]]:
    """`veratur call` step arguments, and per turn the seconds of tail silence the caller could not see
    (noise fills it), to move the end of speech back to where the speech really ended."""
    args: list[str] = []
    corrections: list[float] = []
    for i, turn in enumerate(turns):
        if turn.kind == "dtmf":
            args += ["--dtmf", turn.value]
            corrections.append(0.0)
        elif turn.kind == "pause":
            args += ["--pause", turn.value]
            corrections.append(0.0)
        else:
            pcm = render(turn, script.channel, i)
            path = work / f"turn{i + 1}.wav"
            write_wav(path, pcm)
            corrections.append(max(0.0, TAIL_MS / 1000 - trailing_silence_s(pcm)))
            args += ["--barge", f"{turn.barge_s}:{path}"] if turn.barge_s is not None else ["--wav", str(path)]
    return args, corrections


def _wait_closed(service: CaseService, call_id: str) -> Any:
    deadline = time.monotonic() + RECORD_WAIT_S
    record = None
    while time.monotonic() < deadline:
        record = service.get_call(call_id)
        if record is not None and record.ended_at is not None:
            return record
        time.sleep(0.2)
    return record


def _by_turn(transcript: list[TurnView]) -> tuple[list[str], list[TurnView], list[list[str]]]:
    """(greeting texts, caller turns, portal texts after each caller turn)."""
    greeting: list[str] = []
    callers: list[TurnView] = []
    after: list[list[str]] = []
    for t in transcript:
        if t.speaker == "caller":
            callers.append(t)
            after.append([])
        elif t.speaker == "portal":
            (after[-1] if after else greeting).append(t.text)
    return greeting, callers, after


def run_script(script: Script, target: Target, work: Path, *, keep_audio: bool = False,
               quick: bool = False) -> ScriptResult:
    """`quick`: hang up 3 s into the last reply instead of hearing it out (the status reply is ~46 s of speech);
    the length of that last reply is then not measured."""
    result = ScriptResult(script.name, script.channel.label())
    if "spanish_speech" in script.needs and not target.spanish_speech:
        result.skipped = "needs a Spanish recognizer (asr.engine whisper or a Spanish Vosk model); the node has none"
        return result
    work.mkdir(parents=True, exist_ok=True)
    service = CaseService.from_url(target.database_url, redis_url=target.redis_url,
                                   ratelimit_prefix=f"voice-eval-{uuid.uuid4().hex[:8]}")
    try:
        variables = _variables(script, service)
        turns = [ScriptTurn(t.kind, _fill(t.value, variables), t.barge_s) for t in script.turns]
        expect = json.loads(_fill(json.dumps(script.expect, ensure_ascii=False), variables))
        args, corrections = _caller_args(script, turns, work)
        transfers = "transfer" in expect or expect.get("disposition") == "transferred"
        recording = work / "received.wav"
        started = datetime.now(UTC).replace(tzinfo=None)
        proc = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "veratur"), "call", target.uri, "--json",
                               "--wait", str(TRANSFER_WAIT_S if transfers else 3), "--reply-timeout", "20", "--record", str(recording),
                               *(["--no-last-reply-end"] if quick else []), *args],
                              capture_output=True, text=True, timeout=CALL_TIMEOUT_S, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        calls = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not calls:
            result.failures.append(f"the call failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
            return result
        call = calls[0]
        result.call_id = str(call["call_id"])
        result.duration_s = float(call["duration_s"])
        result.recording = recording if keep_audio else None
        if not keep_audio:
            recording.unlink(missing_ok=True)
        if call.get("greeting_start") is not None and call.get("greeting_end") is not None:
            result.greeting_s = call["greeting_end"] - call["greeting_start"]
        record = _wait_closed(service, result.call_id)
        transcript = service.transcript(result.call_id)
        greeting, callers, after = _by_turn(transcript)
        result.portal_turns = [t.text for t in transcript if t.speaker == "portal"]
        _turn_metrics(result, turns, call["turns"], corrections, callers, after, greeting, variables)
        _check(result, expect, record, service, variables, callers, call["turns"], started, target)
    finally:
        service.close()
    result.success = not result.failures
    return result


def _turn_metrics(result: ScriptResult, turns: list[ScriptTurn], timeline: list[dict[str, Any]],
                  corrections: list[float], callers: list[TurnView], after: list[list[str]], greeting: list[str],
                  variables: dict[str, str]) -> None:
    if result.greeting_s is not None:
        result.utterances.append((result.greeting_s, " ".join(greeting)))
    caller_index = 0
    for i, turn in enumerate(turns):
        seen = timeline[i] if i < len(timeline) else {}
        latency = seen.get("latency_ms")
        if latency is not None:
            latency += corrections[i] * 1000
        reply_s = None
        if seen.get("reply_start") is not None and seen.get("reply_end") is not None:
            reply_s = seen["reply_end"] - seen["reply_start"]
        shown = turn.value
        for secret_value in (variables.get("pin"), variables.get("pin_grouped")):
            shown = shown.replace(secret_value, "****") if secret_value else shown
        out = TurnResult(turn.kind, shown, latency, reply_s)
        if seen.get("portal_stopped") is not None:
            out.portal_stopped_ms = (seen["portal_stopped"] - seen["sent_start"]) * 1000
        committed = callers[caller_index] if caller_index < len(callers) and turn.kind != "pause" else None
        if turn.kind != "pause":
            caller_index += 1
        if turn.spoken:
            out.reference = reference_text(turn)
            secret = committed is not None and committed.text in SECRET_MARKS
            if not secret:
                out.heard = committed.text if committed is not None else ""
                out.errors, out.words = hs.word_errors(out.reference, out.heard)
        if reply_s is not None:
            replies = after[caller_index - 1] if 0 < caller_index <= len(after) and turn.kind != "pause" else []
            result.utterances.append((reply_s, " ".join(replies)))
        result.turns.append(out)


def _check(result: ScriptResult, expect: dict[str, Any], record: Any, service: CaseService,
           variables: dict[str, str], callers: list[TurnView], timeline: list[dict[str, Any]], started: datetime,
           target: Target) -> None:
    fail = result.failures.append
    portal = fold(" | ".join(result.portal_turns))
    for text in expect.get("portal_says", []):
        if fold(text) not in portal:
            fail(f"the portal never said {text!r}")
    for text in expect.get("portal_never", []):
        if fold(text) in portal:
            fail(f"the portal said {text!r}")
    if "caller_intents" in expect:
        got = [t.intent or "-" for t in callers]
        want = expect["caller_intents"]
        if got[:len(want)] != want:
            fail(f"caller intents {got}, expected {want} first")
    if "caller_turns" in expect and len(callers) != expect["caller_turns"]:
        fail(f"{len(callers)} caller turns committed, expected {expect['caller_turns']}: "
             f"{[t.text for t in callers]}")
    if expect.get("status_read") and "estado:" not in portal:
        fail("the case status was not read (no 'Estado:' in the portal's turns)")
    if record is None:
        fail("no call record for the call")
        return
    if expect.get("case_linked") and record.folio != variables.get("folio"):
        fail(f"the call record's case is {record.folio!r}, expected the script's case")
    if "disposition" in expect and record.disposition != expect["disposition"]:
        fail(f"disposition {record.disposition!r}, expected {expect['disposition']!r}")
    if expect.get("interaction"):
        case = service.find_case(variables.get("folio", "")) if variables else None
        if case is None or not any(i.channel == "phone" and i.started_at >= started for i in case.interactions):
            fail("no phone interaction written to the case during the call")
    if expect.get("reply_audio"):
        silent = [i + 1 for i, t in enumerate(timeline) if t.get("kind") != "pause" and t.get("reply_start") is None]
        if silent or len(timeline) < len(result.turns):
            fail(f"no reply audio after turn(s) {silent or 'not played'}")
    if "barge_in" in expect:
        n, within = expect["barge_in"]["turn"], float(expect["barge_in"]["within_ms"])
        stopped = result.turns[n - 1].portal_stopped_ms if n <= len(result.turns) else None
        if stopped is None or stopped > within:
            fail(f"barge-in on turn {n}: the portal kept talking {stopped} ms after the caller began (> {within:g})")
    if "transfer" in expect:
        if target.agent is None:
            fail("expect.transfer, but no agent is listening for this run")
        else:
            headers = target.agent.headers_for(result.call_id, wait_s=10.0)
            if headers is None:
                fail("the agent received no INVITE for this call")
            else:
                for name, value in expect["transfer"].items():
                    if headers.get(name.lower()) != value:
                        fail(f"agent INVITE header {name}: {headers.get(name.lower())!r}, expected {value!r}")


def long_utterances(results: list[ScriptResult], limit_s: float = LONG_UTTERANCE_S) -> list[tuple[str, float, str]]:
    """(script, seconds, text) of every portal utterance longer than `limit_s` of audio, longest first."""
    rows = [(r.name, s, text) for r in results for s, text in r.utterances if s > limit_s]
    return sorted(rows, key=lambda row: -row[1])

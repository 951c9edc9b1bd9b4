"""Conversation scripts (YAML): what the synthetic caller does, over which channel, and what must come out.

    name: status-by-keypad
    tags: [smoke]                    # subsets: `veratur eval calls --tag smoke`
    needs: [spanish_speech]          # skipped (and said so) when the node cannot recognize Spanish
    case: demo | fresh | none        # the case the caller asks about: {folio}, {pin}, {folio_spoken},
                                     # {folio_grouped}, {pin_grouped} (4+4 and 2+2 digits, a space = a pause)
    channel: {mulaw: true, snr_db: 20, noise: white, loss: 0.02, seed: 1}
    turns:
      - dtmf: "3"                    # RFC 4733 keys
      - digits: "{folio}"            # the human speaker reads digits one by one (spliced recordings); a space
                                     # in the value is a pause between groups (800 ms)
      - human: vm-goodbye            # one human recording by name; its transcript is the reference text
      - say: "quiero hablar con un asesor"    # espeak-ng: only for words no recording has (recognized poorly)
      - pause: 2
      - {digits: "3", barge_s: 1.0}  # start 1 s after the previous reply began, over it (barge-in)
    expect:
      portal_says: ["Estado:"]       # substrings of the portal's committed transcript turns (accents ignored)
      portal_never: ["no le entendí"]
      caller_intents: [dtmf, dtmf]   # intents of the caller's committed turns, in order (prefix match)
      caller_turns: 3                # exactly this many committed caller turns (a folio read in groups is one)
      status_read: true              # a portal turn read the case status ("Estado:")
      case_linked: true              # the call record carries the case folio
      interaction: true              # the case has an interaction from this call
      disposition: completed         # the call record's disposition
      reply_audio: true              # every turn got reply audio
      barge_in: {turn: 2, within_ms: 1500}    # the portal fell silent this soon after turn 2 (1-based) began
      transfer: {X-Veratur-Case: "{folio}"}   # an agent (sipp) got an INVITE with these headers
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TURN_KINDS = ("dtmf", "digits", "human", "say", "pause")
CASE_KINDS = ("demo", "fresh", "none")
NEEDS = ("spanish_speech",)
EXPECT_KEYS = ("portal_says", "portal_never", "caller_intents", "caller_turns", "status_read", "case_linked",
               "interaction", "disposition", "reply_audio", "barge_in", "transfer")


class ScriptError(ValueError):
    """A script file that cannot be played: the message names the file and the field."""


@dataclass(frozen=True)
class Channel:
    mulaw: bool = True
    snr_db: float | None = None
    noise: str = "white"
    loss: float = 0.0            # fraction of 20 ms packets lost (replaced by silence: no concealment)
    seed: int = 1

    def label(self) -> str:
        parts = ["mulaw" if self.mulaw else "linear"]
        if self.snr_db is not None:
            parts.append(f"{self.noise} {self.snr_db:g} dB")
        if self.loss:
            parts.append(f"loss {self.loss:.0%}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ScriptTurn:
    kind: str
    value: str
    barge_s: float | None = None

    @property
    def spoken(self) -> bool:
        return self.kind in ("digits", "human", "say")


@dataclass(frozen=True)
class Script:
    name: str
    path: Path
    turns: tuple[ScriptTurn, ...]
    expect: dict[str, Any]
    description: str = ""
    tags: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    case: str = "none"
    channel: Channel = field(default_factory=Channel)


def _fail(path: Path, where: str, message: str) -> ScriptError:
    return ScriptError(f"{path}: {where}: {message}")


def _turn(path: Path, index: int, raw: object) -> ScriptTurn:
    where = f"turns[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "expected a mapping such as {dtmf: '3'}")
    barge = raw.get("barge_s")
    kinds = [k for k in raw if k in TURN_KINDS]
    unknown = [k for k in raw if k not in TURN_KINDS and k != "barge_s"]
    if unknown:
        raise _fail(path, where, f"unknown key(s) {unknown}; one of {list(TURN_KINDS)} (+ barge_s)")
    if len(kinds) != 1:
        raise _fail(path, where, f"exactly one of {list(TURN_KINDS)} expected, got {kinds or 'none'}")
    kind = kinds[0]
    value = raw[kind]
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value).strip() == "":
        raise _fail(path, where, f"{kind}: a non-empty string or number expected")
    if kind == "pause" and not 0 < float(value) <= 60:
        raise _fail(path, where, "pause: seconds in (0, 60]")
    if barge is not None:
        if kind not in ("digits", "human", "say") or not isinstance(barge, int | float) or not 0 <= barge <= 60:
            raise _fail(path, where, "barge_s: seconds in [0, 60], on a spoken turn only")
        if index == 0:
            pass                  # barging into the greeting is allowed
    return ScriptTurn(kind, str(value), None if barge is None else float(barge))


def _channel(path: Path, raw: object) -> Channel:
    if raw is None:
        return Channel()
    if not isinstance(raw, dict):
        raise _fail(path, "channel", "expected a mapping")
    unknown = set(raw) - {"mulaw", "snr_db", "noise", "loss", "seed"}
    if unknown:
        raise _fail(path, "channel", f"unknown key(s) {sorted(unknown)}")
    try:
        channel = Channel(mulaw=bool(raw.get("mulaw", True)),
                          snr_db=None if raw.get("snr_db") is None else float(raw["snr_db"]),
                          noise=str(raw.get("noise", "white")), loss=float(raw.get("loss", 0.0)),
                          seed=int(raw.get("seed", 1)))
    except (TypeError, ValueError) as exc:
        raise _fail(path, "channel", str(exc)) from None
    if channel.noise not in ("white", "pink", "babble"):
        raise _fail(path, "channel.noise", "white, pink or babble")
    if not 0 <= channel.loss < 0.5:
        raise _fail(path, "channel.loss", "a fraction in [0, 0.5)")
    return channel


def _strings(path: Path, where: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, where, "a list of strings expected")
    return list(value)


def _expect(path: Path, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "expect", "a non-empty mapping of expected outcomes (a script must check something)")
    unknown = set(raw) - set(EXPECT_KEYS)
    if unknown:
        raise _fail(path, "expect", f"unknown key(s) {sorted(unknown)}; known: {list(EXPECT_KEYS)}")
    for key in ("portal_says", "portal_never", "caller_intents"):
        if key in raw:
            _strings(path, f"expect.{key}", raw[key])
    for key in ("status_read", "case_linked", "interaction", "reply_audio"):
        if key in raw and not isinstance(raw[key], bool):
            raise _fail(path, f"expect.{key}", "true or false")
    if "caller_turns" in raw and not (type(raw["caller_turns"]) is int and raw["caller_turns"] >= 1):
        raise _fail(path, "expect.caller_turns", "a whole number >= 1")
    if "barge_in" in raw:
        barge = raw["barge_in"]
        if not (isinstance(barge, dict) and isinstance(barge.get("turn"), int)
                and isinstance(barge.get("within_ms"), int | float)):
            raise _fail(path, "expect.barge_in", "{turn: N, within_ms: MS} expected")
    if "transfer" in raw and not (isinstance(raw["transfer"], dict)
                                  and all(isinstance(v, str) for v in raw["transfer"].values())):
        raise _fail(path, "expect.transfer", "a mapping of header name to expected value")
    return dict(raw)


def load_script(path: Path) -> Script:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScriptError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise ScriptError(f"{path}: a mapping with name, turns and expect expected")
    unknown = set(raw) - {"name", "description", "tags", "needs", "case", "channel", "turns", "expect"}
    if unknown:
        raise _fail(path, "top level", f"unknown key(s) {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, "name", "a non-empty string expected")
    turns = raw.get("turns")
    if not isinstance(turns, list) or not turns:
        raise _fail(path, "turns", "a non-empty list expected")
    case = raw.get("case", "none")
    if case not in CASE_KINDS:
        raise _fail(path, "case", f"one of {list(CASE_KINDS)}")
    needs = tuple(_strings(path, "needs", raw.get("needs", [])))
    if set(needs) - set(NEEDS):
        raise _fail(path, "needs", f"known needs: {list(NEEDS)}")
    script = Script(name=name.strip(), path=path, turns=tuple(_turn(path, i, t) for i, t in enumerate(turns)),
                    expect=_expect(path, raw.get("expect")), description=str(raw.get("description", "")),
                    tags=tuple(_strings(path, "tags", raw.get("tags", []))), needs=needs, case=str(case),
                    channel=_channel(path, raw.get("channel")))
    barge = script.expect.get("barge_in")
    if barge and not (1 <= barge["turn"] <= len(script.turns) and script.turns[barge["turn"] - 1].barge_s is not None):
        raise _fail(path, "expect.barge_in.turn", "must name (1-based) a turn that has barge_s")
    return script


def load_scripts(paths: list[Path]) -> list[Script]:
    """Files, or directories (their *.yml, sorted); duplicate names are an error."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.yml")))
        elif path.is_file():
            files.append(path)
        else:
            raise ScriptError(f"{path}: no such script file or directory")
    scripts = [load_script(f) for f in files]
    seen: dict[str, Path] = {}
    for s in scripts:
        if s.name in seen:
            raise ScriptError(f"{s.path}: script name {s.name!r} already used by {seen[s.name]}")
        seen[s.name] = s.path
    return scripts

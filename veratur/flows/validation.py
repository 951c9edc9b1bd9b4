"""Validation of a candidate flow tree before anything goes live.

Three layers, cheapest first:
1. every flow file: size, YAML syntax (file, line, column) and repeated keys (`dialogs.catalog_yaml.parse_yaml`);
2. schema and cross references, each problem naming the key: unknown top-level keys, a story/rule step whose
   intent is not in the domain or whose `utter_` response is not defined, an NLU example of an unknown intent or
   entity, the menu prompts (`ivr.dialogue.menu.MenuSpec`), the catalogs (`dialogs.catalog.validate_catalog_file`:
   a city without attractions, a trámite without a channel);
3. `rasa data validate` on the candidate tree (a subprocess in the Rasa venv, ~15 s).
Problems reuse the catalogs' `Problem` (file, line, column, key, severity) so the admin page shows one kind.
"""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dialogs.catalog import validate_catalog_file
from dialogs.catalog_yaml import Parsed, Problem, locate, parse_yaml, validate_model
from ivr.dialogue.menu import MenuSpec
from veratur.flows.paths import MAX_FILE_BYTES, list_flow_files
from veratur.training import RASA_BIN, rasa_env

__all__ = ["Problem", "validate_tree", "validate_text", "rasa_data_validate", "errors_in"]

DOMAIN_FILE = "dialogs/domain.yml"
MENU_FILE = "dialogs/menu.yml"
CATALOG_FILES = frozenset({"nlu_data/cities.yml", "nlu_data/tramites.yml"})
DOMAIN_KEYS = frozenset({"version", "session_config", "intents", "entities", "slots", "responses", "actions",
                         "forms", "config", "e2e_actions"})
DATA_KEYS = frozenset({"version", "nlu", "rules", "stories", "responses"})
STORY_KEYS = frozenset({"story", "rule", "steps", "condition", "conversation_start", "wait_for_user_input",
                        "metadata"})
STEP_KEYS = frozenset({"intent", "action", "slot_was_set", "active_loop", "checkpoint", "or", "user", "bot",
                       "entities", "metadata"})
NLU_KEYS = frozenset({"intent", "synonym", "regex", "lookup", "examples", "metadata"})
RESPONSE_KEYS = frozenset({"text", "custom", "buttons", "image", "channel", "condition", "metadata", "attachment",
                           "quick_replies", "elements", "id", "button_type"})
DEFAULT_ACTIONS = frozenset({
    "action_listen", "action_restart", "action_session_start", "action_default_fallback", "action_deactivate_loop",
    "action_revert_fallback_events", "action_default_ask_affirmation", "action_default_ask_rephrase",
    "action_two_stage_fallback", "action_unlikely_intent", "action_back", "action_extract_slots",
})
DEFAULT_INTENTS = frozenset({"restart", "back", "out_of_scope", "session_start", "nlu_fallback"})
DEFAULT_SLOTS = frozenset({"requested_slot", "session_started_metadata"})
RASA_VALIDATE_TIMEOUT_S = 300
_ENTITY_ANNOTATION = re.compile(r"\[[^\]]+\](?:\((?P<name>[^)\s:]+)(?::[^)]*)?\)|\{\s*\"entity\"\s*:\s*\"(?P<json>[^\"]+)\")")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
BLOCKING_WARNINGS = ("is used in the stories", "is not a valid", "not included in the domain",
                     "not listed in the domain", "is not in the domain", "conflict", "Invalid")
"""Rasa 3.6 reports these as UserWarnings and exits 0, yet a model built from such data misbehaves on calls:
they block an apply (unused responses and similar remain warnings)."""


def errors_in(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


class _Domain:
    """The names a domain defines, for cross-reference checks."""

    def __init__(self, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        self.intents = {_name(i) for i in data.get("intents") or [] if _name(i)} | DEFAULT_INTENTS
        self.entities = {_name(e) for e in data.get("entities") or [] if _name(e)}
        self.responses = set((data.get("responses") or {}).keys()) if isinstance(data.get("responses"), dict) else set()
        self.actions = {_name(a) for a in data.get("actions") or [] if _name(a)} | DEFAULT_ACTIONS
        forms = data.get("forms") or {}
        self.forms = set(forms.keys()) if isinstance(forms, dict) else set()
        slots = data.get("slots") or {}
        self.slots = (set(slots.keys()) if isinstance(slots, dict) else set()) | DEFAULT_SLOTS


def _name(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and len(item) == 1:
        return str(next(iter(item)))
    return None


def validate_text(rel: str, text: str, domain: Any = None) -> list[Problem]:
    """Syntax and per-file schema of one file's text (cross references need `domain`, the parsed domain data)."""
    size = len(text.encode("utf-8"))
    if size > MAX_FILE_BYTES:
        return [Problem(rel, f"el archivo tiene {size} bytes; el máximo es {MAX_FILE_BYTES} (1 MB)")]
    parsed, problems = parse_yaml(text, rel)
    if parsed is None:
        return problems
    return problems + _schema(rel, parsed, _Domain(domain) if domain is not None else None)


def validate_tree(root: Path, files: Iterable[str] | None = None) -> list[Problem]:
    """Every problem in the flow files under `root` (all of them, or only `files` plus cross references)."""
    problems: list[Problem] = []
    domain_text = _read(root / DOMAIN_FILE)
    domain_parsed, domain_problems = parse_yaml(domain_text, DOMAIN_FILE) if domain_text is not None else (None, [])
    if domain_text is None:
        problems.append(Problem(DOMAIN_FILE, "falta el dominio de Rasa"))
    domain = _Domain(domain_parsed.data if domain_parsed else None)
    wanted = set(files) if files is not None else None
    for flow in list_flow_files(root):
        if wanted is not None and flow.path not in wanted and flow.path != DOMAIN_FILE:
            continue
        if flow.size > MAX_FILE_BYTES:
            problems.append(Problem(flow.path, f"el archivo tiene {flow.size} bytes; el máximo es {MAX_FILE_BYTES}"))
            continue
        if flow.path in CATALOG_FILES:
            problems += _catalog(root, flow.path)
            continue
        if flow.path == DOMAIN_FILE:
            parsed, file_problems = domain_parsed, list(domain_problems)
        else:
            parsed, file_problems = parse_yaml((root / flow.path).read_text(encoding="utf-8", errors="replace"),
                                               flow.path)
        problems += file_problems
        if parsed is not None:
            # cross references against a domain that does not parse would only repeat its syntax error
            problems += _schema(flow.path, parsed, domain if domain_parsed is not None else None)
    return problems


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _catalog(root: Path, rel: str) -> list[Problem]:
    # the catalog validator names the file it was given; report it by its project path
    out = []
    for p in validate_catalog_file(root / rel):
        out.append(Problem(rel, p.message, key=p.key, entry=p.entry, line=p.line, column=p.column,
                           severity=p.severity))
    return out


def _schema(rel: str, parsed: Parsed, domain: _Domain | None) -> list[Problem]:
    data = parsed.data
    if rel == MENU_FILE:
        return validate_model(MenuSpec, parsed, rel)[1]
    if not isinstance(data, dict):
        return [Problem(rel, "el nivel superior debe ser un mapa de claves (version, nlu, rules, ...)", line=1)]
    allowed = DOMAIN_KEYS if rel == DOMAIN_FILE else DATA_KEYS
    problems = [locate(rel, parsed, [key], "clave desconocida (¿está bien escrita?)")
                for key in data if key not in allowed]
    if rel == DOMAIN_FILE:
        problems += _domain_checks(rel, parsed)
        return problems
    for section in ("stories", "rules"):
        problems += _story_checks(rel, parsed, section, domain)
    problems += _nlu_checks(rel, parsed, domain)
    return problems


def _domain_checks(rel: str, parsed: Parsed) -> list[Problem]:
    problems: list[Problem] = []
    responses = parsed.data.get("responses")
    if responses is None:
        return problems
    if not isinstance(responses, dict):
        return [locate(rel, parsed, ["responses"], "debe ser un mapa de respuestas (utter_...)")]
    for name, variants in responses.items():
        loc: list[str | int] = ["responses", str(name)]
        if not str(name).startswith("utter_"):
            problems.append(locate(rel, parsed, loc, "el nombre de una respuesta debe empezar con utter_"))
        if not isinstance(variants, list) or not variants:
            problems.append(locate(rel, parsed, loc, "debe ser una lista de variantes (- text: ...)"))
            continue
        for i, variant in enumerate(variants):
            if not isinstance(variant, dict):
                problems.append(locate(rel, parsed, [*loc, i], "cada variante es un mapa con text: o custom:"))
                continue
            for key in variant:
                if key not in RESPONSE_KEYS:
                    problems.append(locate(rel, parsed, [*loc, i, str(key)], "clave desconocida en la respuesta"))
            if not any(k in variant for k in ("text", "custom", "image", "buttons", "attachment")):
                problems.append(locate(rel, parsed, [*loc, i], "la variante no tiene text: ni custom:"))
            elif "text" in variant and (not isinstance(variant["text"], str) or not variant["text"].strip()):
                problems.append(locate(rel, parsed, [*loc, i, "text"], "el texto no puede quedar vacío"))
    return problems


def _story_checks(rel: str, parsed: Parsed, section: str, domain: _Domain | None) -> list[Problem]:
    items = parsed.data.get(section)
    if items is None:
        return []
    if not isinstance(items, list):
        return [locate(rel, parsed, [section], "debe ser una lista")]
    problems: list[Problem] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(locate(rel, parsed, [section, i], "cada elemento es un mapa con steps:"))
            continue
        for key in item:
            if key not in STORY_KEYS:
                problems.append(locate(rel, parsed, [section, i, str(key)], "clave desconocida"))
        steps = item.get("steps")
        if not isinstance(steps, list):
            problems.append(locate(rel, parsed, [section, i], "falta steps: (una lista de pasos)"))
            continue
        for j, step in enumerate(steps):
            problems += _step_checks(rel, parsed, [section, i, "steps", j], step, domain)
    return problems


def _step_checks(rel: str, parsed: Parsed, loc: list[str | int], step: Any, domain: _Domain | None) -> list[Problem]:
    if not isinstance(step, dict):
        return [locate(rel, parsed, loc, "cada paso es un mapa (intent:, action:, slot_was_set:, ...)")]
    problems = [locate(rel, parsed, [*loc, str(k)], "clave desconocida en el paso") for k in step if k not in STEP_KEYS]
    if "or" in step and isinstance(step["or"], list):
        for k, alt in enumerate(step["or"]):
            problems += _step_checks(rel, parsed, [*loc, "or", k], alt, domain)
    if domain is None:
        return problems
    intent = step.get("intent")
    if isinstance(intent, str) and intent not in domain.intents:
        problems.append(locate(rel, parsed, [*loc, "intent"], f"la intención '{intent}' no está en el dominio "
                               "(dialogs/domain.yml, intents)"))
    action = step.get("action")
    if isinstance(action, str):
        if action.startswith("utter_"):
            if action not in domain.responses and action not in domain.actions:
                problems.append(locate(rel, parsed, [*loc, "action"], f"la respuesta '{action}' no está definida en "
                                       "el dominio (dialogs/domain.yml, responses)"))
        elif action not in domain.actions and action not in domain.forms:
            problems.append(locate(rel, parsed, [*loc, "action"], f"la acción '{action}' no está en el dominio "
                                   "(dialogs/domain.yml, actions o forms)"))
    loop = step.get("active_loop")
    if isinstance(loop, str) and loop not in domain.forms:
        problems.append(locate(rel, parsed, [*loc, "active_loop"], f"el formulario '{loop}' no está en el dominio"))
    slots = step.get("slot_was_set")
    if isinstance(slots, list):
        for k, slot in enumerate(slots):
            name = _name(slot)
            if name and name not in domain.slots:
                problems.append(locate(rel, parsed, [*loc, "slot_was_set", k], f"el slot '{name}' no está en el dominio"))
    return problems


def _nlu_checks(rel: str, parsed: Parsed, domain: _Domain | None) -> list[Problem]:
    items = parsed.data.get("nlu")
    if items is None:
        return []
    if not isinstance(items, list):
        return [locate(rel, parsed, ["nlu"], "debe ser una lista")]
    problems: list[Problem] = []
    for i, item in enumerate(items):
        loc: list[str | int] = ["nlu", i]
        if not isinstance(item, dict):
            problems.append(locate(rel, parsed, loc, "cada elemento es un mapa (intent: ... examples: |)"))
            continue
        for key in item:
            if key not in NLU_KEYS:
                problems.append(locate(rel, parsed, [*loc, str(key)], "clave desconocida"))
        examples = item.get("examples")
        if not isinstance(examples, str):
            problems.append(locate(rel, parsed, [*loc, "examples"] if "examples" in item else loc,
                                   "examples: debe ser un bloque de texto con una línea '- ejemplo' por ejemplo"))
            continue
        problems += _example_lines(rel, parsed, [*loc, "examples"], examples, domain)
        intent = item.get("intent")
        if domain is not None and isinstance(intent, str) and intent not in domain.intents:
            problems.append(locate(rel, parsed, [*loc, "intent"], f"la intención '{intent}' no está en el dominio"))
    return problems


def _example_lines(rel: str, parsed: Parsed, loc: list[str | int], block: str, domain: _Domain | None) -> list[Problem]:
    problems: list[Problem] = []
    base = locate(rel, parsed, loc, "")
    # a `|` block starts on the line after the key; lines inside keep their order
    first_line = (base.line or 0) + 1
    for offset, line in enumerate(block.splitlines()):
        stripped = line.strip()
        if not stripped:
            continue
        where = first_line + offset if base.line else None
        if not stripped.startswith("- "):
            problems.append(Problem(rel, f"cada ejemplo empieza con '- ': {stripped[:60]!r}", key=base.key,
                                    line=where))
            continue
        if domain is None:
            continue
        for match in _ENTITY_ANNOTATION.finditer(stripped):
            entity = match.group("name") or match.group("json")
            if entity and entity not in domain.entities:
                problems.append(Problem(rel, f"la entidad '{entity}' no está en el dominio", key=base.key,
                                        line=where))
    return problems


def rasa_data_validate(root: Path, timeout: float = RASA_VALIDATE_TIMEOUT_S) -> list[Problem]:
    """`rasa data validate` on the candidate tree at `root`: its errors (exit status) and warnings as Problems."""
    if not RASA_BIN.exists():
        return [Problem("rasa", f"{RASA_BIN} no existe: ejecute `make setup`")]
    cmd = [str(RASA_BIN), "data", "validate", "--domain", "domain.yml", "--config", "config.yml",
           "--data", "data", str(root / "nlu_data" / "train")]
    try:
        proc = subprocess.run(cmd, cwd=root / "dialogs", env=rasa_env(), capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return [Problem("rasa", f"rasa data validate no terminó en {timeout:.0f} s")]
    return parse_rasa_validate(proc.stdout + "\n" + proc.stderr, proc.returncode)


def parse_rasa_validate(output: str, returncode: int) -> list[Problem]:
    """Rasa's validator prints UserWarnings and ERROR log lines; a non-zero exit is a failed validation."""
    problems: list[Problem] = []
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).strip()
        if "UserWarning:" in line:
            text = line.split("UserWarning:", 1)[1].strip()
            blocking = any(marker.lower() in text.lower() for marker in BLOCKING_WARNINGS)
            problems.append(Problem("rasa", text, severity="error" if blocking else "warning"))
        elif line.startswith("CONFLICT") or "Story structure conflict" in line:
            problems.append(Problem("rasa", line))
        elif " ERROR " in f" {line} " or line.startswith(("ERROR", "YamlValidationException", "InvalidDomain")):
            problems.append(Problem("rasa", line))
    if returncode != 0 and not errors_in(problems):
        tail = [ln for ln in (_ANSI.sub("", r).strip() for r in output.splitlines()) if ln][-3:]
        problems.append(Problem("rasa", f"rasa data validate terminó con código {returncode}: " + " | ".join(tail)))
    return problems

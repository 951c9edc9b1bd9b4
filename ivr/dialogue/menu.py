"""A small YAML-driven DTMF/keyword menu (`dialogs/menu.yml`): 1 tourism, 2 trámite info, 3 trámite status,
0 agent, in Spanish.

It is the engine's dialogue until the Rasa client is configured, and the fallback when Rasa is down or slow.
Keys and words both choose an option; the recognizer gets the option words as a grammar.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from foundation.paths import REPO_ROOT
from ivr.dialogue.interface import CallerTurn, DialogueReply, Expect, TurnContext
from ivr.speech.endpointing import SPOKEN_DIGITS

DEFAULT_MENU_PATH = REPO_ROOT / "dialogs" / "menu.yml"
NO_MATCH_INTENT = "no_match"


class MenuError(Exception):
    """The menu YAML is unreadable or invalid; the message names the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MenuOption(_Model):
    key: str = Field(pattern=r"^[0-9*]$")
    name: str
    words: list[str] = Field(min_length=1)
    say: str
    transfer: bool = False
    collect_digits: int | None = Field(None, ge=1, le=32)


class MenuSpec(_Model):
    greeting: str
    menu: str
    menu_short: str
    anything_else: str
    no_match: str
    goodbye: str
    goodbye_words: list[str] = []
    options: list[MenuOption] = Field(min_length=1)
    status_readback: str = "Recibimos el folio {folio}."

    @field_validator("options")
    @classmethod
    def _unique_keys(cls, value: list[MenuOption]) -> list[MenuOption]:
        keys = [o.key for o in value]
        if len(keys) != len(set(keys)):
            raise ValueError("two options use the same key")
        return value

    @field_validator("status_readback")
    @classmethod
    def _folio_slot(cls, value: str) -> str:
        try:
            value.format(folio="X")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only the {{folio}} placeholder is allowed ({exc})") from exc
        return value

    def all_texts(self) -> list[str]:
        """Every fixed text the menu can say (for TTS prerendering)."""
        texts = [self.greeting, self.menu, self.menu_short, self.anything_else, self.no_match, self.goodbye]
        texts += [o.say for o in self.options]
        return texts


def load_menu(path: Path | str | None = None) -> MenuSpec:
    path = Path(path or DEFAULT_MENU_PATH)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MenuError(f"{path}: cannot read the menu: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MenuError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return MenuSpec.model_validate(raw)
    except ValidationError as exc:
        problems = ["{}: {}".format(".".join(str(p) for p in e["loc"]) or "(top level)", e["msg"])
                    for e in exc.errors()]
        raise MenuError(f"{path}: " + "; ".join(problems)) from exc


def _fold(text: str) -> str:
    """Lower case without accents, so 'Trámites' and 'tramites' match."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


@dataclass
class _CallState:
    collecting_folio: bool = False


class MenuDialogue:
    """`ivr.dialogue.interface.Dialogue` over the YAML menu. One instance per call (it keeps the call's menu position)."""

    def __init__(self, spec: MenuSpec) -> None:
        self.spec = spec
        self._state = _CallState()
        self._by_key = {o.key: o for o in spec.options}
        self._by_word = {_fold(w): o for o in spec.options for w in o.words}
        for word, digit in SPOKEN_DIGITS.items():      # "uno" chooses option 1 like the key does
            if digit in self._by_key:
                self._by_word.setdefault(word, self._by_key[digit])
        self._goodbye_words = {_fold(w) for w in spec.goodbye_words}

    @property
    def menu_expect(self) -> Expect:
        words = [w for o in self.spec.options for w in o.words] + list(self.spec.goodbye_words)
        return Expect(kind="menu", phrases=tuple(dict.fromkeys(words)))

    async def start(self, ctx: TurnContext) -> DialogueReply:
        self._state = _CallState()
        return DialogueReply(texts=(self.spec.greeting, self.spec.menu), expect=self.menu_expect)

    async def turn(self, ctx: TurnContext, turn: CallerTurn) -> DialogueReply:
        if self._state.collecting_folio:
            return self._folio(turn)
        option = self._choose(turn)
        if option is None:
            if turn.text and any(w in self._goodbye_words for w in _fold(turn.text).split()):
                return DialogueReply(texts=(self.spec.goodbye,), expect=Expect(kind="none"), hangup=True,
                                     intent="goodbye")
            return DialogueReply(texts=(self.spec.no_match, self.spec.menu_short), expect=self.menu_expect,
                                 intent=NO_MATCH_INTENT)
        if option.transfer:
            return DialogueReply(texts=(option.say,), expect=Expect(kind="none"), transfer=True, intent=option.name)
        if option.collect_digits:
            self._state.collecting_folio = True
            return DialogueReply(texts=(option.say,), intent=option.name,
                                 expect=Expect(kind="digits", max_digits=option.collect_digits, terminator="#"))
        return DialogueReply(texts=(option.say, self.spec.anything_else), expect=self.menu_expect,
                             intent=option.name)

    def _choose(self, turn: CallerTurn) -> MenuOption | None:
        if turn.dtmf:
            return self._by_key.get(turn.dtmf[0])
        for word in _fold(turn.text or "").split():
            option = self._by_word.get(word)
            if option is not None:
                return option
        return None

    def _folio(self, turn: CallerTurn) -> DialogueReply:
        from ivr.speech.endpointing import spoken_digits
        digits = turn.dtmf or spoken_digits(turn.text or "")
        digits = "".join(c for c in digits if c.isdigit())
        if not digits:
            return DialogueReply(texts=(self.spec.no_match, self._option_say("tramite_status")),
                                 expect=Expect(kind="digits", max_digits=self._folio_len(), terminator="#"),
                                 intent=NO_MATCH_INTENT)
        self._state.collecting_folio = False
        # Digits are read one by one so the caller can check them.
        spoken = " ".join(digits)
        return DialogueReply(texts=(self.spec.status_readback.format(folio=spoken), self.spec.anything_else),
                             expect=self.menu_expect, intent="tramite_status_folio")

    def _option_say(self, name: str) -> str:
        return next((o.say for o in self.spec.options if o.name == name), self.spec.menu_short)

    def _folio_len(self) -> int:
        return next((o.collect_digits for o in self.spec.options if o.collect_digits), 12)

    async def end(self, ctx: TurnContext) -> None:
        self._state = _CallState()


def menu_dialogue_factory(spec: MenuSpec):  # type: ignore[no-untyped-def]
    """A `dialogue_factory` for the engine: a fresh MenuDialogue per call."""
    def factory(_info: object) -> MenuDialogue:
        return MenuDialogue(spec)
    return factory

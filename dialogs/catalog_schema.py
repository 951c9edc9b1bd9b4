"""Pydantic schemas of the two catalogs administrators edit: `nlu_data/cities.yml` and `nlu_data/tramites.yml`.

Strict on purpose (unknown keys are errors) so a typo such as `atractions:` is reported instead of silently
dropped. Texts marked *spoken* are read aloud by the TTS: short sentences, numbers as words, no abbreviations.
"""
from __future__ import annotations

import string
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

SCHEMA_VERSION = 1

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=80)]
"""Stable identifier: lowercase ASCII words joined by hyphens (`licencia-chofer`)."""
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
"""A data field collected by phone; becomes a Rasa slot name, so snake_case."""
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=600)]
Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=120)]
Month = Annotated[int, Field(ge=1, le=12)]

Channel = Literal["phone", "web", "office", "kiosk"]
"""Where a trámite can be started or finished: the voice portal, the web portal, an office window, a kiosk."""

MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
             "noviembre", "diciembre")
TEMPLATE_FIELDS = frozenset({"tramite", "faltantes"})
DEFAULT_MISSING_ITEMS_TEMPLATE = "Para terminar su trámite de {tramite}, todavía le falta: {faltantes}."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _unique(values: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    for value in values:
        key = value.casefold()
        if key in seen:
            raise ValueError(f"{what} repetido: {value!r}")
        seen.add(key)
    return values


# ----------------------------------------------------------------------------------------------- cities


class Place(_Strict):
    """An attraction: its name and one or two spoken sentences about it."""

    name: Text
    description: Text


class Food(_Strict):
    """A typical dish or drink of the city."""

    name: Text
    description: Text


class Festival(_Strict):
    """A festival and when it happens. `months` holds every month it may fall in (movable feasts: several)."""

    name: Text
    months: list[Month] = Field(min_length=1)
    when: Text
    description: Text
    synonyms: list[Phrase] = []

    @property
    def month_names(self) -> list[str]:
        return [MONTHS_ES[m - 1] for m in self.months]


class Route(_Strict):
    """How to get there by road: a spoken summary, the roads taken and an approximate, spoken duration."""

    summary: Text
    roads: list[Text] = Field(min_length=1)
    duration: Text


class Access(_Strict):
    """Road access from the two places callers start from; None only for the origin city itself."""

    from_xalapa: Route | None = None
    from_veracruz: Route | None = None


ACCESS_ORIGINS = {"from_xalapa": "xalapa", "from_veracruz": "veracruz"}
"""Which city each access origin is; that city (and only it) may leave the route empty."""


class TouristInfo(_Strict):
    """Who gives tourist information. Phone, website and hours only when verified; otherwise left out."""

    office: Text
    spoken: Text
    website: str | None = None
    phone: str | None = None
    hours: str | None = None


class City(_Strict):
    """One of the cities of the tourism line."""

    id: Slug
    name: Text
    spoken_name: Text
    summary: Text
    synonyms: list[Phrase] = []
    mishearings: list[Phrase] = []
    attractions: list[Place] = Field(min_length=3)
    foods: list[Food] = Field(min_length=2)
    festivals: list[Festival] = Field(min_length=1)
    access: Access
    tourist_info: TouristInfo

    @model_validator(mode="after")
    def _access_from_both_origins(self) -> City:
        for key, origin in ACCESS_ORIGINS.items():
            if getattr(self.access, key) is None and self.id != origin:
                raise ValueError(f"access.{key}: falta la ruta por carretera para llegar a {self.name}")
        return self

    @property
    def phrases(self) -> list[str]:
        """Every way callers (or the recognizer) may say this city."""
        return [self.name, self.spoken_name, *self.synonyms, *self.mishearings]


class CitiesFile(_Strict):
    """The whole `cities.yml`."""

    schema_version: Literal[1]
    cities: list[City] = Field(min_length=1)


# ----------------------------------------------------------------------------------------------- trámites


class Agency(_Strict):
    """A state agency that runs trámites; referenced from each trámite by `id`."""

    id: Slug
    name: Text
    spoken_name: Text
    parent: Text | None = None
    website: str | None = None


class Cost(_Strict):
    """What a trámite costs: an amount only when it is well known; otherwise how the amount is set.

    kind: `free` (verified free), `fixed` (a well-known amount in amount_mxn), `by_law` (set by a law or tariff
    that changes; say which and where to look it up), `ask` (not verified: the caller is told to ask the agency).
    """

    kind: Literal["free", "fixed", "by_law", "ask"]
    amount_mxn: Decimal | None = Field(default=None, ge=0)
    spoken: Text
    basis: Text | None = None

    @model_validator(mode="after")
    def _amount_matches_kind(self) -> Cost:
        if self.kind == "fixed" and self.amount_mxn is None:
            raise ValueError("kind 'fixed' necesita amount_mxn")
        if self.kind != "fixed" and self.amount_mxn is not None:
            raise ValueError(f"amount_mxn sólo va con kind 'fixed' (aquí kind es {self.kind!r})")
        return self


PhoneFieldKind = Literal["curp", "full_name", "date", "digits", "plate", "text", "yes_no", "choice", "email"]


class PhoneField(_Strict):
    """One piece of data the voice portal asks for to open a case by phone."""

    name: FieldName
    kind: PhoneFieldKind
    prompt: Text
    required: bool = True
    choices: list[Phrase] | None = None

    @model_validator(mode="after")
    def _choices_only_for_choice(self) -> PhoneField:
        if self.kind == "choice" and not self.choices:
            raise ValueError("kind 'choice' necesita choices")
        if self.kind != "choice" and self.choices:
            raise ValueError("choices sólo va con kind 'choice'")
        return self


class PhoneStart(_Strict):
    """How the portal starts this trámite by phone: the fields to collect and what the caller does next."""

    fields: list[PhoneField] = Field(min_length=1)
    next_step: Text

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, value: list[PhoneField]) -> list[PhoneField]:
        _unique([f.name for f in value], "campo")
        return value


def check_template(value: str) -> str:
    """A missing-items template may use only {tramite} and {faltantes}."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"plantilla mal formada: {exc}") from exc
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"la plantilla usa {sorted(unknown)}; sólo se permiten {{tramite}} y {{faltantes}}")
    if "faltantes" not in names:
        raise ValueError("la plantilla debe decir {faltantes}")
    return value


class Tramite(_Strict):
    """One state procedure."""

    id: Slug
    name: Text
    spoken_name: Text
    short_label: Text | None = None
    synonyms: list[Phrase] = []
    category: Text
    agency: Slug
    requirements: list[Text] = Field(min_length=1)
    cost: Cost
    where: Text
    hours: Text | None = None
    processing_time: Text | None = None
    """How long until the caller has the result, spoken ("el mismo día"); only when it can be verified (a law's
    deadline, a service that issues on the spot). Left empty, the portal says it does not know and where to ask."""
    channels_start: list[Channel] = Field(min_length=1)
    channels_finish: list[Channel] = Field(min_length=1)
    phone_start: PhoneStart | None = None
    missing_items_template: Text | None = None
    notes: Text | None = None

    @field_validator("channels_start", "channels_finish")
    @classmethod
    def _no_repeated_channel(cls, value: list[str]) -> list[str]:
        return _unique(value, "canal")

    @field_validator("synonyms")
    @classmethod
    def _no_repeated_synonym(cls, value: list[str]) -> list[str]:
        return _unique(value, "sinónimo")

    @field_validator("missing_items_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _phone_start_matches_channel(self) -> Tramite:
        if ("phone" in self.channels_start) != (self.phone_start is not None):
            raise ValueError("phone_start se llena si y sólo si 'phone' está en channels_start")
        return self

    @property
    def can_start_by_phone(self) -> bool:
        return self.phone_start is not None

    @property
    def label(self) -> str:
        """The short name used in a disambiguation question."""
        return self.short_label or self.spoken_name

    @property
    def phrases(self) -> list[str]:
        return [self.name, self.spoken_name, *([self.short_label] if self.short_label else []), *self.synonyms]


class TramitesFile(_Strict):
    """The whole `tramites.yml` (or a generated synthetic catalog, which says `synthetic: true`)."""

    schema_version: Literal[1]
    synthetic: bool = False
    missing_items_template: Text = DEFAULT_MISSING_ITEMS_TEMPLATE
    agencies: list[Agency] = Field(min_length=1)
    tramites: list[Tramite] = Field(min_length=1)

    @field_validator("missing_items_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

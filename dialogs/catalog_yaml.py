"""Reading catalog YAML written by people, and reporting each problem with file, line, column, entry and key.

The YAML is composed into nodes first (so every value keeps its line and column), then constructed into plain
data and validated by the pydantic schemas of `catalog_schema`. A pydantic error location (`cities.3.foods`)
is walked back through the node tree to the line the administrator must fix.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

try:  # libyaml is ~10x faster on the 900-entry catalog; the pure-Python loader gives the same marks
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a catalog file, located for the person who edits it (line/column are 1-based)."""

    file: str
    message: str
    key: str = ""
    entry: str | None = None
    line: int | None = None
    column: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        subject = self.key or "(documento)"
        if self.entry:
            subject += f" [entrada {self.entry}]"
        tag = "" if self.severity == "error" else " (aviso)"
        return f"{where}: {subject}: {self.message}{tag}"


class CatalogError(Exception):
    """A catalog file that cannot be used; `problems` lists every error found in it."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        shown = "\n".join(f"  {p}" for p in errors[:20])
        more = f"\n  … y {len(errors) - 20} más" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} error(es) en el catálogo:\n{shown}{more}")


def dotted(loc: Sequence[str | int]) -> str:
    """`('cities', 3, 'foods')` -> `cities[3].foods`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True, slots=True)
class Parsed:
    """A YAML document as data plus its node tree (for locating problems)."""

    data: Any
    root: yaml.Node | None


def parse_yaml(text: str, file: str) -> tuple[Parsed | None, list[Problem]]:
    """Compose and construct one YAML document; syntax errors and duplicated keys become Problems."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        return None, [Problem(file, f"YAML mal formado: {message}", line=_line(mark), column=_col(mark))]
    except yaml.YAMLError as exc:
        return None, [Problem(file, f"YAML mal formado: {exc}")]
    if root is None:
        return None, [Problem(file, "el archivo está vacío")]
    problems = list(_duplicate_keys(root, file, ()))
    try:
        data = _Loader("").construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        return None, [Problem(file, f"YAML no válido: {exc.problem}", line=_line(mark), column=_col(mark))]
    return Parsed(data, root), problems


def _line(mark: Any) -> int | None:
    return None if mark is None else mark.line + 1


def _col(mark: Any) -> int | None:
    return None if mark is None else mark.column + 1


def _duplicate_keys(node: yaml.Node, file: str, loc: tuple[str | int, ...]) -> list[Problem]:
    """PyYAML keeps the last of two equal keys silently; an editor almost always meant something else."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(Problem(file, f"clave repetida (ya aparece en la línea {seen[key]})",
                                        key=dotted((*loc, key)), line=_line(key_node.start_mark),
                                        column=_col(key_node.start_mark)))
            else:
                seen[key] = key_node.start_mark.line + 1
            problems += _duplicate_keys(value_node, file, (*loc, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, file, (*loc, index))
    return problems


def node_at(root: yaml.Node | None, loc: Sequence[str | int]) -> tuple[yaml.Node | None, bool]:
    """The deepest node on the path `loc`, and whether the whole path exists (False: a key is missing)."""
    node = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    child = value_node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            return node, False
        node = child
    return node, True


def locate(file: str, parsed: Parsed, loc: Sequence[str | int], message: str,
           severity: Severity = "error") -> Problem:
    """A Problem at `loc` (a path of keys and list indexes), with line/column and the entry id when known."""
    node, _ = node_at(parsed.root, loc)
    mark = _key_mark(parsed.root, loc) or (node.start_mark if node is not None else None)
    return Problem(file, message, key=dotted(loc), entry=_entry_id(parsed.data, loc), line=_line(mark),
                   column=_col(mark), severity=severity)


def _key_mark(root: yaml.Node | None, loc: Sequence[str | int]) -> Any:
    """Where the last key of `loc` is written (the line an editor looks for), if it is written at all."""
    if not loc or not isinstance(loc[-1], str):
        return None
    parent, exists = node_at(root, loc[:-1])
    if not exists or not isinstance(parent, yaml.MappingNode):
        return None
    for key_node, _ in parent.value:
        if str(key_node.value) == loc[-1]:
            return key_node.start_mark
    return None


def _entry_id(data: Any, loc: Sequence[str | int]) -> str | None:
    """`cities[3]` -> the `id` written in that entry (or `#3` if it has none)."""
    if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(data, dict):
        items = data.get(str(loc[0]))
        if isinstance(items, list) and 0 <= loc[1] < len(items):
            item = items[loc[1]]
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                return item["id"]
            return f"#{loc[1]}"
    return None


_MESSAGES = {
    "extra_forbidden": "clave desconocida (¿está bien escrita?)",
    "missing": "falta esta clave obligatoria",
    "too_short": "tiene menos elementos de los necesarios",
    "string_pattern_mismatch": "formato no válido: use minúsculas sin acentos y guiones (por ejemplo licencia-chofer)",
    "literal_error": "valor no permitido",
    "less_than_equal": "el valor es demasiado grande; máximo {le}",
    "greater_than_equal": "el valor es demasiado pequeño; mínimo {ge}",
    "string_too_short": "no puede quedar vacío",
    "string_too_long": "el texto es demasiado largo (máximo {max_length} caracteres)",
    "string_type": "debe ser un texto",
    "int_parsing": "debe ser un número entero",
    "int_type": "debe ser un número entero",
    "decimal_parsing": "debe ser una cantidad",
    "bool_parsing": "debe ser true o false",
    "bool_type": "debe ser true o false",
    "list_type": "debe ser una lista (líneas que empiezan con guion, o [a, b])",
    "model_type": "debe ser un mapa de claves",
    "model_attributes_type": "debe ser un mapa de claves",
    "dict_type": "debe ser un mapa de claves",
}


def validate_model(model: type[BaseModel], parsed: Parsed, file: str) -> tuple[Any, list[Problem]]:
    """Validate `parsed.data` against `model`; every pydantic error becomes a located Problem."""
    try:
        return model.model_validate(parsed.data), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if isinstance(p, (str, int))]
            # pydantic adds the union member / validator name as an extra loc part: drop non-YAML parts
            loc = _trim_loc(parsed.root, loc)
            text = _MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
            try:
                text = text.format(**err.get("ctx", {}))
            except (KeyError, IndexError, ValueError):
                pass
            if err["type"] == "extra_forbidden" and loc and " " in str(loc[-1]):
                text += "; si es parte de un texto con comas entre llaves, ponga ese texto entre comillas"
            if err["type"] == "too_short":
                text = f"{text} (mínimo {err.get('ctx', {}).get('min_length', '?')})"
            elif err["type"] == "literal_error":
                text = f"{text}; se espera {err.get('ctx', {}).get('expected', '')}"
            problems.append(locate(file, parsed, loc, text))
        return None, problems


def _trim_loc(root: yaml.Node | None, loc: list[str | int]) -> list[str | int]:
    """Keep the error path as long as it exists in the YAML, plus one missing key (for 'falta' errors)."""
    for cut in range(len(loc), 0, -1):
        _, exists = node_at(root, loc[:cut])
        if exists:
            return loc[: cut + 1] if cut < len(loc) and isinstance(loc[cut], str) and cut + 1 == len(loc) \
                else loc[:cut]
    return loc[:1]


def read_text(path: Path) -> tuple[str | None, list[Problem]]:
    try:
        return path.read_text(encoding="utf-8"), []
    except FileNotFoundError:
        return None, [Problem(str(path), "no existe el archivo")]
    except UnicodeDecodeError as exc:
        return None, [Problem(str(path), f"el archivo no está en UTF-8 (byte {exc.start})")]
    except OSError as exc:
        return None, [Problem(str(path), f"no se puede leer: {exc.strerror}")]

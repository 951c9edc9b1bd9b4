"""JSON request bodies parsed with bounded nesting. `json.loads` recurses per level: `[`x5000 raised RecursionError,
which no reader caught (a 500 with a traceback for an anonymous POST). Every web reader goes through `parse`, and
callers answer 400 with the message of `BadJson`."""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32          # far above any form or catalog edit we accept, far below the interpreter's recursion limit


class BadJson(ValueError):
    """The body is not JSON we accept; the message is safe to show (Spanish, no traceback)."""


def parse(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadJson(f"JSON demasiado anidado (máximo {max_depth} niveles)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(f"JSON mal formado: {exc}"[:200]) from None
    if depth(data) > max_depth:
        raise BadJson(f"JSON demasiado anidado (máximo {max_depth} niveles)")
    return data


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, [] and {} are 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in item)
    return deepest

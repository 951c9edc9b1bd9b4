"""`POST /catalog/entities` on the action server: the NLU's catalog entity extractor asks here.

Rasa runs in its own venv (Python 3.10, pydantic 1) and cannot load the catalogs; the action server holds them
already, so `dialogs/catalog_nlu/component.py` posts {text, intent, entities} and gets the turn's entities back
(`dialogs.catalog_entities`). Bad bodies get 400 with the reason; the component then keeps DIET's entities.
"""
from __future__ import annotations

from typing import Any

from dialogs.actions.resources import Resources
from dialogs.catalog_entities import CatalogEntities

ROUTE = "/catalog/entities"
MAX_TEXT = 2000
MAX_ENTITIES = 64


class BadRequest(ValueError):
    pass


def checked(body: Any) -> tuple[str, str | None, list[dict[str, Any]]]:
    """(text, intent, entities) of a request body, or BadRequest saying what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    text, intent, entities = body.get("text"), body.get("intent"), body.get("entities", [])
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise BadRequest(f"text must be a string of at most {MAX_TEXT} characters")
    if intent is not None and not isinstance(intent, str):
        raise BadRequest("intent must be a string or null")
    if not isinstance(entities, list) or len(entities) > MAX_ENTITIES \
            or not all(isinstance(e, dict) and isinstance(e.get("entity"), str) for e in entities):
        raise BadRequest(f"entities must be a list of at most {MAX_ENTITIES} objects with an 'entity' name")
    return text, intent, entities


def add_catalog_route(app: Any, resources: Resources) -> None:
    """Register the route on the rasa-sdk Sanic app."""
    from sanic import response

    extractor = CatalogEntities(resources.cities, resources.tramites)

    async def catalog_entities(request: Any) -> Any:
        try:
            text, intent, entities = checked(request.json)
        except BadRequest as exc:
            return response.json({"error": str(exc)}, status=400)
        except Exception:  # noqa: BLE001 - Sanic raises its own error type for a body that is not JSON
            return response.json({"error": "the body is not valid JSON"}, status=400)
        return response.json({"entities": extractor.entities(text, intent, entities)})

    app.add_route(catalog_entities, ROUTE, methods=["POST"])

"""Rasa graph component (Python 3.10, the Rasa venv): city and trámite entities from the catalogs.

The catalogs (and `dialogs.catalog_entities`, which decides) live in the engine's venv, where the action server
already holds them loaded: this component posts each turn's text, intent and DIET entities to the action
server's `POST /catalog/entities` and takes the entities it answers. The action server is found through
$VERATUR_ACTIONS_URL, else the `action_endpoint` of the endpoints file `rasa run --endpoints` was given (every
launcher here writes one). Unreachable, slow (timeout_s) or absent (`rasa train`, `rasa test`): DIET's entities
stand, logged once per outage. Nothing is trained: a catalog edit needs no new weights.
"""
from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import ENTITIES, INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message

from .client import CatalogClient, actions_url  # Rasa imports this as catalog_nlu.component (cwd dialogs/)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=False)
class CatalogEntityExtractor(GraphComponent, EntityExtractorMixin):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {"timeout_s": 0.25}

    def __init__(self, config: dict[str, Any], client: CatalogClient | None = None) -> None:
        url = actions_url()
        self.client = client or (CatalogClient(url, float(config["timeout_s"])) if url else None)

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> CatalogEntityExtractor:
        return cls(config)

    def process(self, messages: list[Message]) -> list[Message]:
        if self.client is None:
            return messages
        for message in messages:
            text = str(message.get(TEXT) or "")
            if not text or text.startswith("/"):
                continue
            intent = (message.get(INTENT) or {}).get("name")
            entities = self.client.entities(text, intent, list(message.get(ENTITIES) or []))
            if entities is not None:
                message.set(ENTITIES, entities, add_to_output=True)
        return messages

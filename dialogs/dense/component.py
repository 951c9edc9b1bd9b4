"""Rasa graph component (Python 3.10, the Rasa venv): the dense intent where DIET is unsure.

Listed in dialogs/config.yml after the FallbackClassifier, so it sees DIET's ranking and the nlu_fallback. The
service URL comes from the environment (VERATUR_DENSE_URL, set by `veratur rasa` from config dialogue.dense), not
from the model: one trained model runs on any node, with or without the service. Entities are not touched.
"""
from __future__ import annotations

import os
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from .decision import ENV_URL, DenseClient, Thresholds, decide  # Rasa imports this as dense.component (cwd dialogs/)

SOURCE_KEY = "intent_source"
"""Added to the parse result when the dense service decided the intent ("dense"), for the bench and the logs."""


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class DenseIntentFallback(GraphComponent, IntentClassifier):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {"diet_threshold": Thresholds.diet, "dense_threshold": Thresholds.dense, "timeout_s": 0.15,
                "method": "linear"}

    def __init__(self, config: dict[str, Any], client: DenseClient | None = None) -> None:
        self.thresholds = Thresholds(float(config["diet_threshold"]), float(config["dense_threshold"]))
        url = os.environ.get(ENV_URL, "").strip()
        self.client = client or (DenseClient(url, float(config["timeout_s"]), method=str(config["method"]))
                                 if url else None)

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> DenseIntentFallback:
        return cls(config)

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            text = str(message.get(TEXT) or "")
            decision = decide(text, message.get(INTENT), message.get(INTENT_RANKING_KEY), self.client,
                              self.thresholds)
            if decision is None:
                continue
            ranking = [entry for entry in message.get(INTENT_RANKING_KEY) or []
                       if entry.get("name") not in (decision.intent, "nlu_fallback")]
            message.set(INTENT, {"name": decision.intent, "confidence": decision.score}, add_to_output=True)
            message.set(INTENT_RANKING_KEY, [{"name": decision.intent, "confidence": decision.score}] + ranking,
                        add_to_output=True)
            message.set(SOURCE_KEY, {"source": "dense", "diet_intent": decision.diet_intent,
                                     "diet_confidence": round(decision.diet_confidence, 4)}, add_to_output=True)
        return messages

"""Rasa graph component (Python 3.10, the Rasa venv): the whitespace tokenizer with folded lemmas.

Rasa's CountVectorsFeaturizer reads each token's `lemma` (its `use_lemma` default), the LexicalSyntacticFeaturizer
its `text`: setting the lemma to `fold(text)` makes the sparse features spelling-tolerant while case features,
offsets and entity values stay the caller's own words. Nothing is trained.
"""
from __future__ import annotations

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.training_data.message import Message

from .fold import fold  # Rasa imports this as text_norm.component (cwd dialogs/)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=False)
class FoldingWhitespaceTokenizer(WhitespaceTokenizer):
    def tokenize(self, message: Message, attribute: str) -> list[Token]:
        tokens = super().tokenize(message, attribute)
        for token in tokens:
            token.lemma = fold(token.text)
        return tokens

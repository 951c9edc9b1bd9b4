"""The form a word is featurized in (stdlib only: imported by Rasa's 3.10 venv and by the engine's tests).

Callers' turns reach the NLU as ASR text (lowercase, no accents or punctuation: "que necesito pa la licencia")
or as typed text ("¿Qué necesito para la licencia?"). Rasa's count-vector featurizers see each spelling as a
different word, so every accented training example taught nothing about its unaccented twin. Folding case and
accents, and the few spoken contractions that stand for a whole word, makes the two the same feature. The token's
own text (its case, for the lexical features) and its offsets (the entity spans) are left as they are.
"""
from __future__ import annotations

import unicodedata

SPOKEN_FORMS = {
    "pa": "para", "pal": "para", "pos": "pues", "pus": "pues", "q": "que", "k": "que", "xq": "porque",
    "porq": "porque", "toy": "estoy", "tons": "entonces", "ora": "ahora", "orita": "ahorita",
}
"""Contractions of Mexican phone speech (and texting) that stand for one word the training data spells out."""


def fold(word: str) -> str:
    """Lowercase without accents ('Qué' -> 'que', 'año' -> 'ano'), a spoken contraction spelled out."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return SPOKEN_FORMS.get(plain, plain)

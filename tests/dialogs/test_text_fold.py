"""The NLU's folded token lemmas: ASR spellings and typed spellings of a turn become the same sparse features."""
from __future__ import annotations

import json
import subprocess

import pytest

from dialogs.text_norm.fold import fold
from veratur.training import DIALOGS_DIR, RASA_BIN


@pytest.mark.parametrize(("word", "folded"), [
    ("Qué", "que"), ("TRÁMITE", "tramite"), ("Tlacotalpan", "tlacotalpan"), ("año", "ano"), ("pingüino", "pinguino"),
    ("pa", "para"), ("Pal", "para"), ("q", "que"), ("orita", "ahorita"), ("2281", "2281"),
])
def test_case_accents_and_spoken_contractions_fold(word: str, folded: str) -> None:
    assert fold(word) == folded


def test_words_that_only_look_like_contractions_stay() -> None:
    assert [fold(w) for w in ("papá", "para", "paz", "que", "toyota")] == ["papa", "para", "paz", "que", "toyota"]


TOKENIZE = """
import json, sys
from rasa.shared.nlu.training_data.message import Message
from text_norm.component import FoldingWhitespaceTokenizer
tok = FoldingWhitespaceTokenizer(FoldingWhitespaceTokenizer.get_default_config())
out = []
for text in json.loads(sys.argv[1]):
    tokens = tok.tokenize(Message(data={"text": text}), "text")
    out.append([[t.text, t.lemma, t.start, t.end] for t in tokens])
print(json.dumps(out))
"""


@pytest.mark.skipif(not RASA_BIN.exists(), reason="the Rasa venv (.venv-rasa) is built by `make setup`")
def test_the_rasa_tokenizer_keeps_text_and_offsets_and_folds_the_lemma() -> None:
    texts = ["¿Qué necesito para la licencia?", "que necesito pa la licencia"]
    run = subprocess.run([str(RASA_BIN.parent / "python"), "-c", TOKENIZE, json.dumps(texts)], cwd=DIALOGS_DIR,
                         capture_output=True, text=True, timeout=120, check=True)
    typed, spoken = json.loads(run.stdout.strip().splitlines()[-1])
    assert [t[0] for t in typed] == ["Qué", "necesito", "para", "la", "licencia"]
    assert [texts[0][s:e] for _, _, s, e in typed] == [t[0] for t in typed]   # spans are the caller's words
    assert [t[1] for t in typed] == [t[1] for t in spoken] == ["que", "necesito", "para", "la", "licencia"]

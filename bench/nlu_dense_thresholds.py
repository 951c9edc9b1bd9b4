"""Choose the dense intent fallback's thresholds (dialogs/dense) WITHOUT the independent set: on the held-out NLU
test split (nlu_data/test, hand-written with wordings not in the training templates, never trained on).

DIET's answer per example comes from a real `rasa run` of the trained model with the dense service off (so it is
DIET + FallbackClassifier alone); the dense service is the real one (.venv-dense) on the training split. Every pair
(diet_threshold, dense_threshold) and both scoring methods (knn vote, linear head) are replayed through
dialogs.dense.decision, the code Rasa runs; the best accuracy wins, ties going to the pair that overrides DIET on
the fewest examples (the most conservative). bench/nlu_eval.py then reports the independent set once.

    .venv/bin/python bench/nlu_dense_thresholds.py [--model dialogs/models/veratur-....tar.gz]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dialogs.dense.decision import DenseClient, Thresholds, choose, diet_top, should_ask  # noqa: E402
from foundation.paths import REPO_ROOT  # noqa: E402

TEST_SPLIT = REPO_ROOT / "nlu_data" / "test" / "nlu_test.yml"
_ANNOTATION = re.compile(r"\[([^\]]+)\](\{[^}]*\}|\([^)]*\))")
DIET_GRID = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01)
"""0.0: only where the FallbackClassifier fell back; 1.01: every turn."""
DENSE_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def load_split(path: Path) -> list[tuple[str, str]]:
    rows = []
    for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
        if "intent" in block:
            rows += [(block["intent"], _ANNOTATION.sub(r"\1", line.strip()[2:].strip()))
                     for line in str(block["examples"]).splitlines() if line.strip().startswith("- ")]
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def replay(rows: list[dict[str, Any]], method: str, th: Thresholds) -> tuple[int, int]:
    """(right, overridden) over the split for one method and threshold pair."""
    right = overridden = 0
    for row in rows:
        final = row["diet_final"]
        if should_ask(row["text"], row["diet_conf"], row["fell_back"], th):
            picked = choose(row[method], th)
            if picked is not None:
                final = picked[0]
                overridden += final != row["diet_final"]
        right += final == row["gold"]
    return right, overridden


def collect(model: Path, examples: list[tuple[str, str]], timeout: float) -> tuple[list[dict[str, Any]], list[float]]:
    from veratur import dense_server
    from veratur.rasa_server import RasaStack, free_port, stop_process, wait_http

    env = {k: v for k, v in os.environ.items() if k != dense_server.ENV_URL}   # DIET alone
    rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dense-th-") as tmp:
        port = free_port()
        dense = dense_server.start(port, REPO_ROOT / "var" / "dense", Path(tmp) / "dense.log")
        try:
            with RasaStack(model, env=dict(env, VERATUR__DATABASE__URL=f"sqlite:///{tmp}/t.db"),
                           log_dir=Path(tmp)) as stack:
                wait_http(f"http://127.0.0.1:{port}/health", dense, timeout, "the dense service")
                client = DenseClient(f"http://127.0.0.1:{port}", timeout_s=10.0)
                with httpx.Client(timeout=60.0) as http:
                    for gold, text in examples:
                        parsed = http.post(f"{stack.url}/model/parse", json={"text": text}).json()
                        name, conf, fell_back = diet_top(parsed.get("intent"), parsed.get("intent_ranking"))
                        row = {"gold": gold, "text": text, "diet_final": (parsed.get("intent") or {}).get("name"),
                               "diet_top": name, "diet_conf": conf, "fell_back": fell_back}
                        for method in ("knn", "linear"):
                            started = time.perf_counter()
                            raw = client._post(client.url, json.dumps({"text": text, "method": method}).encode(),
                                               10.0)
                            latencies.append((time.perf_counter() - started) * 1000)
                            row[method] = json.loads(raw)["intents"]
                        rows.append(row)
                    health = http.get(f"http://127.0.0.1:{port}/health").json()
                    print(f"dense service: {health['examples']} examples, {health['intents']} intents, "
                          f"peak RSS {health['rss_kb'] / 1024:.0f} MB")
        finally:
            stop_process(dense)
    return rows, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, help="model archive (default: the one for the current dialogue files)")
    parser.add_argument("--split", type=Path, default=TEST_SPLIT)
    parser.add_argument("--json", type=Path, help="also write the rows and the choice here")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    args = parser.parse_args()
    from veratur.training import ensure_model
    model = args.model or ensure_model()
    examples = load_split(args.split)
    print(f"model {model.name}; {len(examples)} examples of {args.split.relative_to(REPO_ROOT)}")
    rows, latencies = collect(model, examples, args.startup_timeout)
    n = len(rows)
    base = sum(r["diet_final"] == r["gold"] for r in rows)
    print(f"DIET + FallbackClassifier alone: {base}/{n} = {base / n:.1%} "
          f"({sum(r['fell_back'] for r in rows)} fell back)")
    print(f"dense service round trip (this run, both methods): p50 {percentile(latencies, 0.5):.0f} ms, "
          f"p95 {percentile(latencies, 0.95):.0f} ms")
    for method in ("knn", "linear"):
        alone = sum(bool(r[method]) and r[method][0]["name"] == r["gold"] for r in rows)
        print(f"\n{method}: dense alone {alone / n:.1%}; accuracy (overridden) by diet_threshold x dense_threshold")
        print("diet\\dense " + "".join(f"{t:>11}" for t in DENSE_GRID))
        for d in DIET_GRID:
            cells = []
            for t in DENSE_GRID:
                right, over = replay(rows, method, Thresholds(d, t))
                cells.append(f"{right / n:>6.1%}({over:>3})")
            print(f"{d:<10} " + "".join(f"{c:>11}" for c in cells))
    candidates = []
    for method in ("knn", "linear"):
        for d in DIET_GRID:
            for t in DENSE_GRID:
                right, over = replay(rows, method, Thresholds(d, t))
                candidates.append((-right, over, -t, d, method))
    best = min(candidates)
    right, over, t, d, method = -best[0], best[1], -best[2], best[3], best[4]
    print(f"\nchosen: method {method}, diet_threshold {d}, dense_threshold {t}: {right}/{n} = {right / n:.1%} "
          f"(+{right - base} over DIET alone, {over} examples overridden)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "chosen": {"method": method, "diet_threshold": d,
                                                                  "dense_threshold": t, "right": right, "n": n,
                                                                  "diet_alone": base}}, ensure_ascii=False,
                                        indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long the dialogue model takes to train, per pipeline component, from a cold Rasa cache; optionally its
independent-set figures. Prints figures, asserts nothing.

    .venv/bin/python bench/nlu_train_time.py                                   # the live dialogs/config.yml
    .venv/bin/python bench/nlu_train_time.py --config bench/nlu_pipelines/linear.yml --eval
    .venv/bin/python bench/nlu_train_time.py --config dialogs/config.yml --seed 8 --eval   # DIET's seed spread

The project (dialogs/ + nlu_data/train) is copied to a temporary directory with the given config, so the live
model and the shared training cache are untouched. Each line is one component's stretch: wall seconds, the CPU
seconds of the `rasa train` process tree in that stretch (comparable across machine loads, wall time is not),
and the load average. Rasa reports a component when it starts; featurizing the training data for the next
trained component is counted in the stretch before it.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from foundation.paths import REPO_ROOT  # noqa: E402
from veratur import training  # noqa: E402


def tree_cpu_s(root: psutil.Process) -> float:
    total = 0.0
    for child in root.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def with_seed(config: str, seed: int) -> str:
    """The config with every component's random_seed set to `seed` (DIET's and TED's)."""
    return re.sub(r"(random_seed:\s*)\d+", rf"\g<1>{seed}", config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "dialogs" / "config.yml")
    parser.add_argument("--seed", type=int, help="replace every random_seed in the config")
    parser.add_argument("--eval", action="store_true", help="then run bench/nlu_eval.py on the trained model")
    parser.add_argument("--keep", type=Path, help="copy the trained model here")
    args = parser.parse_args()

    config = args.config.read_text(encoding="utf-8")
    if args.seed is not None:
        config = with_seed(config, args.seed)
    me = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="nlu-train-time-") as tmp:
        work = Path(tmp)
        project = work / "dialogs"
        shutil.copytree(training.DIALOGS_DIR, project, ignore=shutil.ignore_patterns("models", ".rasa", "__pycache__"))
        (project / "config.yml").write_text(config, encoding="utf-8")
        os.environ["RASA_CACHE_DIRECTORY"] = str(work / "cache")        # cold: nothing reused from earlier runs
        training.sync_catalog_lookups()
        training.MODELS_DIR.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        mark = {"at": started, "cpu": 0.0, "what": "start (imports, graph, data)"}
        rows: list[tuple[str, float, float, float]] = []

        def progress(line: str) -> None:
            if not line.startswith("training "):
                return
            now, cpu = time.monotonic(), tree_cpu_s(me)
            rows.append((mark["what"], now - mark["at"], cpu - mark["cpu"], os.getloadavg()[0]))
            mark.update(at=now, cpu=cpu, what=line.removeprefix("training "))
            print(f"{rows[-1][0]:40s} {rows[-1][1]:7.1f} s wall {rows[-1][2]:7.1f} s cpu  load {rows[-1][3]:.1f}",
                  flush=True)

        target = work / "veratur-bench.tar.gz"
        training.train_into(project, training.NLU_TRAIN_DIR, target, progress)
        total = time.monotonic() - started
        print(f"{mark['what']:40s} {time.monotonic() - mark['at']:7.1f} s wall (its cpu is not seen: the process ended)")
        print(f"TOTAL {total:.1f} s wall for {args.config}" + (f" (seed {args.seed})" if args.seed is not None else ""))
        if args.keep:
            shutil.copy(target, args.keep)
        if args.eval:
            return subprocess.call([sys.executable, str(REPO_ROOT / "bench" / "nlu_eval.py"), "--model", str(target),
                                    "--failures", "0"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

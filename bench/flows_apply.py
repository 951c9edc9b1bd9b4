"""Stage timings of a dialog-flow apply (veratur/flows) on a temp copy of the flow tree, without a Rasa server.

    .venv/bin/python bench/flows_apply.py [--edit-domain]

Prints seconds per stage: fast validation (syntax, schema, cross references, catalogs), `rasa data validate`,
training (a cache hit unless --edit-domain changes a training input: then a real `rasa train`, ~1-2 min),
`rasa test core`, writing and recording. The model cache is the repository's dialogs/models/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foundation.config import load_settings  # noqa: E402
from foundation.paths import REPO_ROOT  # noqa: E402
from veratur.flows.paths import list_flow_files  # noqa: E402
from veratur.flows.service import SUPPORT_FILES, Edit, FlowService  # noqa: E402
from veratur.flows.store import RevisionStore  # noqa: E402
from veratur.flows.validation import validate_tree  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edit-domain", action="store_true", help="change a response (forces a training)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flows-") as tmp:
        root = Path(tmp) / "live"
        for rel in [f.path for f in list_flow_files(REPO_ROOT)] + list(SUPPORT_FILES):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO_ROOT / rel, root / rel)
        t0 = time.perf_counter()
        validate_tree(root)
        print(f"fast validation of {len(list_flow_files(root))} files: {time.perf_counter() - t0:.3f} s")
        base = load_settings()
        settings = base.model_copy(update={"data_dir": Path(tmp) / "data",
                                           "tts": base.tts.model_copy(update={"cache_dir": Path(tmp) / "tts"})})
        service = FlowService(settings, live_root=root, store=RevisionStore(Path(tmp) / "flows"), rasa_url="")
        path = "dialogs/domain.yml" if args.edit_domain else "dialogs/menu.yml"
        text, sha = service.read(path)
        marker = f"bench {time.time():.0f}"
        new = (text.replace("Bienvenido a Veratur", f"Bienvenido a Veratur ({marker})", 1) if args.edit_domain
               else text.replace("Bienvenido al portal", f"Bienvenido ({marker}) al portal", 1))
        stamps: list[tuple[float, str, str]] = []
        started = time.perf_counter()
        service.apply([Edit(path, new, sha)], author="bench", message="bench",
                      progress=lambda stage, msg: stamps.append((time.perf_counter(), stage, msg)))
        total = time.perf_counter() - started
        print(f"apply of {path} (training input changed: {args.edit_domain}): {total:.1f} s")
        for i, (at, stage, msg) in enumerate(stamps):
            end = stamps[i + 1][0] if i + 1 < len(stamps) else started + total
            print(f"  {stage:<14} {end - at:7.1f} s  {msg[:70]}")   # until the next progress line
    return 0


if __name__ == "__main__":
    sys.exit(main())

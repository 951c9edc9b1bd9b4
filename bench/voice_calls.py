"""The whole voice regression suite (every script in tests/voice/scripts, or those named) as real calls through
a node started here — Kamailio, one worker, Rasa and the action server, a sipp agent — and its figures: task
success, turn latency (end of caller speech -> first reply audio), recognizer WER on the caller's audio (human
speech and espeak-ng apart), and every portal utterance longer than 20 s. Writes an HTML report.

    .venv/bin/python bench/voice_calls.py [--asr whisper|vosk] [--tag noise] [--report var/voice-eval/bench.html]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from foundation.config import load_settings
from foundation.paths import REPO_ROOT
from testkit.voice_eval.report import format_text, summary, write_html
from testkit.voice_eval.script import load_scripts
from testkit.voice_eval.suite import run_scripts, started_node

SCRIPTS = REPO_ROOT / "tests" / "voice" / "scripts"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scripts", nargs="*", type=Path)
    parser.add_argument("--asr", choices=["whisper", "vosk", "config"], default="config",
                        help="the node's recognizer (default: the configuration's asr section)")
    parser.add_argument("--vosk-model", default="ko-test", help="with --asr vosk: the model name")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--rasa-url", help="use this running Rasa instead of starting one")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "var" / "voice-eval" / "bench.html")
    args = parser.parse_args()
    scripts = load_scripts(args.scripts or [SCRIPTS])
    if args.tag:
        scripts = [s for s in scripts if set(args.tag) & set(s.tags)]
    asr = load_settings().asr.model_dump(mode="json")
    if args.asr == "whisper":
        asr = {"engine": "whisper"}
    elif args.asr == "vosk":
        asr = {"engine": "vosk", "model": args.vosk_model}
    with tempfile.TemporaryDirectory(prefix="voice-bench-") as tmp:
        with started_node(Path(tmp), rasa_url=args.rasa_url, database_url=None, asr=asr) as target:
            results = run_scripts(scripts, target, Path(tmp),
                                  progress=lambda r: print(format_text([r]).splitlines()[0], flush=True))
    print(format_text(results))
    write_html(results, args.report)
    figures = summary(results)
    figures["asr"] = asr.get("engine")
    by_source = {}
    for source in ("digits", "human", "say"):
        turns = [t for r in results for t in r.turns if t.kind == source and t.words]
        words = sum(t.words for t in turns)
        by_source[source] = None if not words else round(sum(t.errors for t in turns) / words, 3)
    figures["wer_by_source"] = by_source
    print(json.dumps(figures))
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`veratur eval calls [SCRIPTS...]`: play the voice regression scripts as real SIP calls and report.

By default it starts a node of its own (Kamailio, one worker, Rasa and the action server, a SQLite case database
in the work directory) with the configuration's `asr` section, and a sipp agent for transfers. `--uri` and
`--database` play against a node that is already running instead (transfers are then not checked)."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from foundation.config import Settings
from foundation.paths import REPO_ROOT
from testkit import human_speech as hs
from testkit.voice_eval.report import format_text, summary, write_html
from testkit.voice_eval.runner import ScriptResult, Target
from testkit.voice_eval.script import ScriptError, load_scripts
from testkit.voice_eval.suite import REDIS_URL, run_scripts, spanish_speech, started_node

DEFAULT_SCRIPTS = REPO_ROOT / "tests" / "voice" / "scripts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    calls = sub.add_parser("calls", help="play conversation scripts as real calls; task success, latency, WER")
    calls.add_argument("scripts", nargs="*", type=Path, metavar="SCRIPT",
                       help=f"script files or directories (default {DEFAULT_SCRIPTS.relative_to(REPO_ROOT)})")
    calls.add_argument("--tag", action="append", default=[], help="only scripts with this tag (repeatable)")
    calls.add_argument("--report", type=Path, default=Path("var/voice-eval/report.html"), help="HTML report path")
    calls.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    calls.add_argument("--uri", help="play against this running node's front door instead of starting one")
    calls.add_argument("--database", help="with --uri: that node's case database URL")
    calls.add_argument("--rasa-url", help="start the node without its own Rasa and use this one")
    calls.add_argument("--keep-audio", action="store_true", help="keep what each call received (received.wav)")
    calls.add_argument("--json", action="store_true", help="print the summary as JSON as the last line")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if (reason := hs.missing_reason()) is not None:
        print(f"veratur eval: {reason}", file=sys.stderr)
        return 2
    try:
        scripts = load_scripts(args.scripts or [DEFAULT_SCRIPTS])
    except ScriptError as exc:
        print(f"veratur eval: {exc}", file=sys.stderr)
        return 2
    if args.tag:
        scripts = [s for s in scripts if set(args.tag) & set(s.tags)]
    if not scripts:
        print("veratur eval: no script selected", file=sys.stderr)
        return 2
    if args.uri and not args.database:
        print("veratur eval: --uri needs --database (where the node commits its calls)", file=sys.stderr)
        return 2
    asr = settings.asr.model_dump(mode="json")
    with tempfile.TemporaryDirectory(prefix="voice-eval-") as tmp:
        # Kept audio must outlive the temporary directory.
        work = args.work or (Path("var/voice-eval/work") if args.keep_audio else Path(tmp))

        def progress(r: ScriptResult) -> None:
            print(format_text([r]).splitlines()[0], flush=True)

        if args.uri:
            target = Target(args.uri, args.database, spanish_speech(asr), REDIS_URL)
            results = run_scripts(scripts, target, work, keep_audio=args.keep_audio, progress=progress)
        else:
            print(f"starting a node for {len(scripts)} script(s) in {work} ...", flush=True)
            with started_node(work, rasa_url=args.rasa_url, database_url=None, asr=asr) as target:
                results = run_scripts(scripts, target, work, keep_audio=args.keep_audio, progress=progress)
    print(format_text(results))
    write_html(results, args.report)
    print(f"report: {args.report}")
    figures = summary(results)
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["succeeded"] == figures["calls"] else 1

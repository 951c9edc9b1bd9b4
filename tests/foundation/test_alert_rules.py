"""The Prometheus alert rules in config/prometheus are valid (Debian's promtool) and only name metrics the node
really exports (a renamed metric would silently make an alert never fire)."""
from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from foundation.paths import REPO_ROOT
from ivr.metrics import EngineMetrics

RULES = REPO_ROOT / "config" / "prometheus" / "veratur_alerts.yml"
SUPERVISOR_METRICS = ("veratur_child_up", "veratur_child_restarts_total")
PROMQL_BUILTIN = {"up"}


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_rules_name_only_exported_metrics() -> None:
    exported = set(PROMQL_BUILTIN)
    for metric in EngineMetrics().registry.collect():
        # a labelled counter has no sample before its first use: its exported names come from its type
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(metric.type, ("",))
        exported |= {s.name for s in metric.samples} | {metric.name + suffix for suffix in suffixes}
    supervisor = (REPO_ROOT / "veratur" / "supervisor.py").read_text()
    for name in SUPERVISOR_METRICS:
        assert f'"{name.removesuffix("_total")}' in supervisor, name
        exported.add(name)
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        names = set(re.findall(r"\b(veratur_[a-z_]+|up)\b(?=\s*[{\[)]|\s*(?:==|>|<|$))", rule["expr"]))
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)

"""The Prometheus alert rules in config/prometheus are valid (Debian's promtool) and only name metrics the node
really exports (a renamed metric would silently make an alert never fire)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from foundation.paths import REPO_ROOT
from ivr.call.outbox import Outbox
from ivr.metrics import EngineMetrics

RULES = REPO_ROOT / "config" / "prometheus" / "veratur_alerts.yml"
SUPERVISOR_METRICS = ("veratur_child_up", "veratur_child_restarts_total")
PROMQL_BUILTIN = {"up"}


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 14 rules found" in done.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    """config/prometheus/veratur_alerts_test.yml: the outbox alerts fire on a lasting backlog, not a drained one; the
    recognizer overload alerts fire on dropped decodes that go on (not a burst) and on holds over 10 % of turns."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    done = subprocess.run([promtool, "test", "rules", "veratur_alerts_test.yml"], cwd=RULES.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_outbox_gauges_read_the_outbox(tmp_path: Path) -> None:
    metrics = EngineMetrics()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    try:
        metrics.watch_outbox(outbox)
        value = metrics.registry.get_sample_value
        assert (value("veratur_outbox_pending"), value("veratur_outbox_oldest_age_seconds")) == (0.0, 0.0)
        first = outbox.append("add_turn", {"call_id": "a"})
        outbox.append("add_turn", {"call_id": "b"})
        outbox._db.execute("UPDATE entries SET queued_at = datetime('now', '-90 seconds') WHERE seq = ?", (first,))
        assert value("veratur_outbox_pending") == 2.0
        assert 85 <= (value("veratur_outbox_oldest_age_seconds") or 0) <= 120
        outbox.bury(first, "refused")
        assert (value("veratur_outbox_pending"), value("veratur_outbox_dead_letters")) == (1.0, 1.0)
    finally:
        outbox.close()


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

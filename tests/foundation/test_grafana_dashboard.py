"""config/grafana/veratur_node.json: a Grafana dashboard that loads (JSON, panel layout, datasource variable), whose
queries are valid PromQL (Debian's promtool parses them as recording rules) and name only metrics the node really
exports (the worker's EngineMetrics registry, the supervisor's gauges and counters)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from foundation.paths import REPO_ROOT
from ivr.metrics import EngineMetrics

DASHBOARD = REPO_ROOT / "config" / "grafana" / "veratur_node.json"


def _exported() -> set[str]:
    names: set[str] = set()
    for metric in EngineMetrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(metric.type, ("",))
        names |= {s.name for s in metric.samples} | {metric.name + suffix for suffix in suffixes}
    supervisor = (REPO_ROOT / "veratur" / "supervisor.py").read_text()
    for kind, name in re.findall(r'\b(Gauge|Counter)\(\s*"(veratur_[a-z_]+)"', supervisor):
        names.add(name.removesuffix("_total") + "_total" if kind == "Counter" else name)
    return names


def _targets(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_loads() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() and t["refId"] for t in p["targets"]), p["title"]
    used = {m for _, expr in _targets(dash) for m in re.findall(r"\$(\w+)", expr)}
    assert used <= set(variables), used - set(variables)


def test_every_query_names_an_exported_metric() -> None:
    exported = _exported()
    assert {"veratur_child_up", "veratur_child_restarts_total", "veratur_outbox_pending"} <= exported
    for title, expr in _targets(json.loads(DASHBOARD.read_text())):
        names = set(re.findall(r"\bveratur_[a-z_]+\b", expr))
        assert names, title
        assert names <= exported, (title, names - exported)


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    rules = [{"record": f"grafana:panel_{i}", "expr": expr.replace("$instance", ".*")}
             for i, (_, expr) in enumerate(_targets(json.loads(DASHBOARD.read_text())))]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout

"""`veratur up` as a child process of a test, and sipp calls through its front door (testkit.node)."""
from __future__ import annotations

from testkit.node import BANNER, Node, caller_scenario, run_node, sipp_counts, start_calls

__all__ = ["BANNER", "Node", "caller_scenario", "run_node", "sipp_counts", "start_calls"]

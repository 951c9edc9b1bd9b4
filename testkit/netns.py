"""A test topology of network namespaces: one "host" namespace per node, all on one bridge, nothing in the
machine's own namespace (the bridge lives in a hub namespace of its own, and every veth pair is created directly
inside its namespaces). Names carry the creating process's pid and a random tag, so parallel runs never collide,
and namespaces left by a run that was killed are removed by the next one.

Needs root (CAP_SYS_ADMIN) and iproute2; `unavailable()` says why a topology cannot be built here."""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

PREFIX = "vts-"
STALE = re.compile(rf"^{PREFIX}(\d+)-")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable() -> str | None:
    """None when namespaces can be built here, else the reason (for a precise skip)."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"{PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()[:200]}"
    _delete(probe)
    return None


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def kill_all(ns: str) -> int:
    """SIGKILL every process inside `ns` (a host lost at once). How many there were."""
    pids = _ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)
    return len(pids)


def _delete(ns: str) -> None:
    """Kill whatever still runs inside `ns`, then delete it (its veths go with it)."""
    kill_all(ns)
    _ip("netns", "del", ns, check=False)


def remove_stale() -> None:
    """Namespaces of earlier runs whose process is gone (a test run killed before its clean-up)."""
    for ns in _namespaces():
        match = STALE.match(ns)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _delete(ns)
        except PermissionError:
            continue


@dataclass
class Topology:
    """Hosts by name, each a namespace with one address on the shared /24."""

    tag: str
    subnet: str                                   # e.g. "10.77.3"
    hosts: dict[str, str] = field(default_factory=dict)      # name -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # name -> IPv4 address
    hub: str = ""

    @property
    def network(self) -> str:
        return f"{self.subnet}.0/24"

    def ns(self, host: str) -> str:
        return self.hosts[host]

    def address(self, host: str) -> str:
        return self.addresses[host]

    def shared(self, index: int = 100) -> str:
        """An extra address on the subnet (e.g. a virtual address that moves between hosts)."""
        return f"{self.subnet}.{index}"

    def move_address(self, address: str, to: str, from_: str | None = None) -> None:
        """What VRRP (keepalived) does when the holder is lost: the address leaves `from_` and appears on `to`;
        the others' neighbour caches are flushed, as keepalived's gratuitous ARP makes them learn the new owner."""
        if from_ is not None:
            _ip("-n", self.hosts[from_], "addr", "del", f"{address}/24", "dev", "eth0", check=False)
        _ip("-n", self.hosts[to], "addr", "add", f"{address}/24", "dev", "eth0")
        for name, ns in self.hosts.items():
            if name != to:
                _ip("-n", ns, "neigh", "flush", "all", check=False)

    def allow_nonlocal_bind(self, host: str) -> None:
        """net.ipv4.ip_nonlocal_bind=1 in `host` (a standby listens on the shared address before it holds it)."""
        subprocess.run(self.argv(host, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind"]), check=True,
                       timeout=10)

    def argv(self, host: str, argv: list[str]) -> list[str]:
        """`argv` run inside `host`'s namespace (`ip netns exec` execs it: the pid is the program's own)."""
        return ["ip", "netns", "exec", self.hosts[host], *argv]


@contextlib.contextmanager
def topology(names: list[str]) -> Iterator[Topology]:
    """Namespaces `names` on one bridge (addresses .1, .2, ... in that order); everything removed afterwards,
    whatever happened, including processes still running inside."""
    remove_stale()
    tag = secrets.token_hex(3)
    base = f"{PREFIX}{os.getpid()}-{tag}"
    rnd = secrets.randbelow(200 * 250)
    topo = Topology(tag=tag, subnet=f"10.{20 + rnd // 250}.{rnd % 250}", hub=f"{base}-hub")
    created: list[str] = []
    try:
        _ip("netns", "add", topo.hub)
        created.append(topo.hub)
        _ip("-n", topo.hub, "link", "set", "lo", "up")
        _ip("-n", topo.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", topo.hub, "link", "set", "br0", "up")
        for index, name in enumerate(names, start=1):
            ns = f"{base}-{name}"
            _ip("netns", "add", ns)
            created.append(ns)
            # Both ends are created inside their namespaces: no interface ever appears in the machine's own.
            _ip("link", "add", f"p{index}", "netns", topo.hub, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", topo.hub, "link", "set", f"p{index}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{topo.subnet}.{index}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            topo.hosts[name] = ns
            topo.addresses[name] = f"{topo.subnet}.{index}"
        yield topo
    finally:
        for ns in reversed(created):
            _delete(ns)

"""A media node's membership in its front doors' dispatchers (node.role media).

The front node's Kamailio does not list the media nodes' workers in its file: each media node adds its own
workers over the front door's RPC (`dispatcher.add`, ctl binrpc on TCP node.rpc_port) once they answer, checks
every node.register_interval_s that they are still there (a restarted front door has forgotten them) and adds
them again, marks a dead worker inactive at once ("ip") and a draining node's workers disabled ("d": no new calls,
in-dialog requests still pass), and removes them when the node stops (`dispatcher.remove`).

Measured on Kamailio 5.6.3: `dispatcher.add`/`remove` rebuild the list but keep the call-load counts of the
destinations already there (unlike `dispatcher.reload`, which zeroes them); a second rebuild within
`reload_delta` is refused ("Ongoing reload"), so every call here is retried.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from foundation.config import Settings
from foundation.logs import kv
from veratur import kamailio

log = logging.getLogger("veratur.membership")

PROBING_FLAG = "8"           # dispatcher.add flags: probed with OPTIONS like the file's destinations ("AP")
REBUILD_ATTEMPTS = 8         # dispatcher.add/remove refused while another rebuild is under way
REBUILD_RETRY_S = 0.4
RPC_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Member:
    """One worker of this node as a dispatcher destination."""

    index: int
    uri: str
    duid: str
    maxload: int

    @property
    def attrs(self) -> str:
        return f"duid={self.duid};maxload={self.maxload}"


class Membership:
    """This media node's workers in the dispatcher of every front door in node.front_doors."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.targets = [kamailio.rpc_target(ip, settings.node.rpc_port) for ip in settings.node.front_doors]
        self.members = {i: Member(i, kamailio.worker_uri(settings, i), kamailio.media_duid(settings.node_name, i),
                                  settings.sip.max_calls_per_worker) for i in range(workers)}
        self.draining = False
        self.joined: set[str] = set()     # front doors that list every ready worker

    async def _rpc(self, target: str, *args: str) -> str:
        return await kamailio.rpc_at(target, *args, timeout_s=RPC_TIMEOUT_S)

    async def _rebuild(self, target: str, *args: str) -> None:
        """dispatcher.add / dispatcher.remove, retried while Kamailio refuses a rebuild too close to the last."""
        for attempt in range(1, REBUILD_ATTEMPTS + 1):
            try:
                await self._rpc(target, *args)
                return
            except kamailio.KamailioError as exc:
                if "Ongoing reload" not in str(exc) or attempt == REBUILD_ATTEMPTS:
                    raise
            await asyncio.sleep(REBUILD_RETRY_S * attempt)

    async def sync(self, ready: set[int]) -> None:
        """Make every front door list the ready workers (added where missing); a draining node's are disabled."""
        for target in self.targets:
            try:
                present = {d.uri: d for d in await kamailio.destinations_at(target)}
                for index in sorted(ready):
                    member = self.members[index]
                    dest = present.get(member.uri)
                    if dest is None and not self.draining:
                        await self._rebuild(target, "dispatcher.add", str(kamailio.DISPATCHER_SET), member.uri,
                                            PROBING_FLAG, "0", member.attrs)
                        log.info("worker joined front door %s", kv(event="member_added", front_door=target,
                                                                   worker=index, duid=member.duid))
                    elif dest is not None and self.draining and not dest.flags.startswith("D"):
                        await self._set(target, member, "d")
            except kamailio.KamailioError as exc:
                if target in self.joined:
                    log.warning("front door unreachable %s", kv(event="front_door_unreachable", front_door=target,
                                                                error=exc))
                self.joined.discard(target)
                continue
            if target not in self.joined and ready:
                self.joined.add(target)
                log.info("joined front door %s", kv(event="node_joined", front_door=target, workers=len(ready)))
                print(f"Joined front door {target} with {len(ready)} worker(s)", flush=True)

    async def _set(self, target: str, member: Member, state: str) -> None:
        await self._rpc(target, "dispatcher.set_duid_state", state, str(kamailio.DISPATCHER_SET), member.duid)
        log.info("dispatcher state %s", kv(event="worker_state", front_door=target, worker=member.index,
                                           state=state))

    async def set_state(self, index: int, state: str) -> None:
        """`state` for worker `index` at every reachable front door ("ip" dead, "ap" back, "d" drained)."""
        member = self.members[index]
        for target in self.targets:
            try:
                await self._set(target, member, state)
            except kamailio.KamailioError as exc:
                log.warning("dispatcher state not changed %s", kv(event="worker_state_failed", front_door=target,
                                                                  worker=index, state=state, error=exc))

    async def end_dialogs(self, index: int) -> int:
        """BYE both sides of the dialogs dead worker `index` held, at every front door. How many were ended."""
        ended = 0
        for target in self.targets:
            try:
                ended += await kamailio.end_worker_dialogs_at(target, self.members[index].uri)
            except kamailio.KamailioError as exc:
                log.warning("dead worker's dialogs not ended %s", kv(event="dialogs_end_failed", front_door=target,
                                                                     worker=index, error=exc))
        return ended

    async def load(self) -> int | None:
        """Calls the front doors count on this node's workers; None when no front door answers."""
        total, answered = 0, False
        duids = {m.duid for m in self.members.values()}
        for target in self.targets:
            try:
                dests = await kamailio.destinations_at(target)
            except kamailio.KamailioError:
                continue
            answered = True
            total += sum(d.load for d in dests if d.duid in duids)
        return total if answered else None

    async def leave(self) -> None:
        """Remove this node's workers from every front door (a node that stops is no destination any more)."""
        for target in self.targets:
            try:
                present = {d.uri for d in await kamailio.destinations_at(target)}
                for member in self.members.values():
                    if member.uri in present:
                        await self._rebuild(target, "dispatcher.remove", str(kamailio.DISPATCHER_SET), member.uri)
                log.info("left front door %s", kv(event="node_left", front_door=target))
            except kamailio.KamailioError as exc:
                log.warning("front door not left %s", kv(event="node_leave_failed", front_door=target, error=exc))

"""Kamailio as the node's SIP front door: its configuration generated from the settings, its command line, and
its control socket (kamcmd) for draining workers.

Kamailio spreads new calls over the pjsua2 workers with the dispatcher's call-load algorithm (each worker's
`maxload` = its call limit), answers 503 + Retry-After when every worker is full, rate-limits new INVITEs
(pjsua2 workers abort near 32 new calls/s) and refuses sources outside `sip.allowed_peers`. Only SIP crosses
Kamailio; RTP flows directly between caller and worker. The measured facts behind each setting are in
docs/kamailio.md.
"""
from __future__ import annotations

import asyncio
import glob
import hashlib
import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from foundation.config import Settings
from veratur import kamailio_tls, registrations

DISPATCHER_SET = 1
ALG_CALL_LOAD = 10
DS_FLAGS_FAILOVER = 2            # keep the other destinations in the XAVP list for ds_next_dst()
DS_PING_INTERVAL_S = 5
# No answer at all (not even 100) within this: the worker is dead, frozen or dropped the message. pjsip sends 100
# Trying within milliseconds; each unanswered INVITE holds a call slot this long (the 30 s default: minutes).
FR_TIMER_MS = 1000
FR_INV_TIMER_MS = 30000          # an answered-with-1xx INVITE may ring this long
HASH_INITEXPIRE_S = 60           # load slot of an INVITE never answered 2xx (lost reply) expires after this
HASH_EXPIRE_MARGIN_S = 120       # ... of a confirmed call: max call duration + this margin (lost BYE)
RETRY_AFTER_FULL_S = 5           # Retry-After when every worker is full
RETRY_AFTER_RATE_S = 1           # Retry-After when the new-call rate limit is hit
CHILDREN = 2                     # UDP receiver processes per socket (2-core node)
TCP_CHILDREN = 2
SHM_MB = 64
PKG_MB = 8
KAMAILIO_BINARY_NAMES = ("kamailio",)
# RFC 3261 18.1.1: a request larger than 1300 bytes (path MTU unknown) goes over a congestion-controlled transport.
UDP_MTU_BYTES = 1300
# The workers' pjsip is built with PJSIP_MAX_PKT_LEN = 4000 (not settable at run time in the 2.15.1 wheel): a UDP
# datagram above it is truncated and a TCP message above it overflows the receive buffer, unanswered either way.
# Our relay adds a Via and up to two Record-Routes (~250 bytes): what cannot reach a worker whole gets 513 here.
MAX_MESSAGE_BYTES = 3600
# The methods the front door relays (Allow in its 405s and OPTIONS answers): UPDATE and PRACK included, a
# carrier's session refresh (RFC 4028) and reliable provisionals (RFC 3262) reach the workers, which serve both.
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK"
STATIC_PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8, "G722": 9}      # RFC 3551
CODEC_RATES = {"opus": 48000}
LOG_SNIPPET_CHARS = 60           # at most this much of a caller-supplied value in a log line
DIALOG_PROFILE = "worker"        # dialogs by the duid of the worker that answered them (ended when it dies)
# dispatcher.add/remove rebuild the list; the module refuses another rebuild within reload_delta ("Ongoing
# reload", default 5 s). Media nodes joining together retry, so 1 s is enough to keep rebuilds apart.
RELOAD_DELTA_S = 1


class KamailioError(Exception):
    """Kamailio is missing or its control socket did not answer."""


UNIX_SOCKET_PATH_MAX = 100     # bytes; Kamailio's ctl module allows 104


@dataclass(frozen=True)
class KamailioPaths:
    """Where one node's Kamailio keeps its generated config and runtime files (all under <data_dir>/kamailio)."""

    root: Path

    @property
    def cfg(self) -> Path:
        return self.root / "kamailio.cfg"

    @property
    def dispatcher_list(self) -> Path:
        return self.root / "dispatcher.list"

    @property
    def db_dir(self) -> Path:
        """db_text tables (the uac module's `uacreg`: registrations at a PBX/trunk, passwords inside: mode 0600)."""
        return self.root / "db"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kamailio.pid"

    @property
    def ctl_socket(self) -> Path:
        """Kamailio's RPC socket. A Unix socket path must fit sun_path (Kamailio refuses > 104 bytes and then does
        not start): a long data_dir (a deep install path, pytest-xdist's tmp dirs) gets a short path of its own
        in a private directory under the system temp dir instead, one per data_dir."""
        path = self.run_dir / "kamailio_ctl"
        if len(str(path)) <= UNIX_SOCKET_PATH_MAX:
            return path
        private = Path(tempfile.gettempdir()) / f"veratur-{os.getuid()}"
        private.mkdir(mode=0o700, exist_ok=True)
        digest = hashlib.sha256(str(self.root.absolute()).encode()).hexdigest()[:16]
        return private / f"kamctl-{digest}"

    @classmethod
    def for_settings(cls, settings: Settings) -> KamailioPaths:
        return cls(settings.path(settings.data_dir) / "kamailio")


def worker_duid(index: int) -> str:
    """The dispatcher's unique id of worker `index` (used for call-load counting and draining)."""
    return f"w{index}"


def remote_duid(index: int) -> str:
    """The dispatcher's unique id of the `index`-th entry of sip.remote_workers (a worker on another node)."""
    return f"r{index}"


def media_duid(node_name: str, index: int) -> str:
    """The dispatcher's unique id of worker `index` of media node `node_name` (unique across the nodes that
    register with one front door; `;` and `=` would break the attribute string)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node_name)
    return f"{safe}.w{index}"


def find_binary() -> str:
    """Path of the kamailio executable (Debian installs it in /usr/sbin, often outside a user's PATH)."""
    for name in KAMAILIO_BINARY_NAMES:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
        if found:
            return found
    raise KamailioError("kamailio is not installed: install the Debian package `kamailio` (make setup does it)")


def find_kamcmd() -> str:
    found = shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        raise KamailioError("kamcmd is not installed: it comes with the Debian package `kamailio`")
    return found


def find_module_dir() -> str:
    """Kamailio's module directory (multi-arch on Debian)."""
    candidates = sorted(glob.glob("/usr/lib/*/kamailio/modules")) + [
        "/usr/lib/kamailio/modules", "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules"]
    for path in candidates:
        if Path(path, "dispatcher.so").exists():
            return path
    raise KamailioError("Kamailio modules not found (looked for dispatcher.so): install the Debian package `kamailio`")


def _host(address: str) -> str:
    """An address as it appears in a SIP URI (IPv6 in brackets)."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def worker_uri(settings: Settings, index: int) -> str:
    """The dispatcher destination of local worker `index` (also the value its dialogs are filed under)."""
    return f"sip:{_host(settings.sip.bind_address)}:{settings.sip.worker_port(index)}"


def render_dispatcher_list(settings: Settings) -> str:
    """One destination per worker, local ones then sip.remote_workers: `SETID URI FLAGS PRIORITY duid=..;maxload=N`."""
    sip = settings.sip
    # Media nodes (node.role media) add their own workers at run time over RPC: they are not in this file.
    lines = ["# Generated by veratur from config/veratur.yml: one pjsua2 worker per line. Do not edit."]
    local_workers = 0 if settings.node.role == "front" else sip.workers
    for index in range(local_workers):
        uri = worker_uri(settings, index)
        lines.append(f"{DISPATCHER_SET} {uri} 0 0 duid={worker_duid(index)};maxload={sip.max_calls_per_worker}")
    for index, address in enumerate(sip.remote_workers):
        host, _, port = address.rpartition(":")
        uri = f"sip:{_host(host.strip('[]'))}:{port}"
        lines.append(f"{DISPATCHER_SET} {uri} 0 0 duid={remote_duid(index)};maxload={sip.max_calls_per_worker}")
    return "\n".join(lines) + "\n"


def _allowed_condition(networks: list[str]) -> str:
    """A Kamailio expression true when the source address is in one of the allowed networks."""
    tests = [f'is_in_subnet("$si", "{ipaddress.ip_network(n, strict=False)}")' for n in networks]
    return " || ".join(tests) if tests else "0"


def rpc_listen_line(settings: Settings) -> str:
    """A front node's Kamailio also takes RPC on TCP (sip.bind_address:node.rpc_port) from its media nodes.
    binrpc has no authentication: the firewall must open this port to the media nodes only (docs/scale-out.md)."""
    if settings.node.role != "front":
        return ""
    return f'modparam("ctl", "binrpc", "tcp:{_host(settings.sip.bind_address)}:{settings.node.rpc_port}")\n'


def _record_route(shared: str | None, port: int) -> str:
    """record_route(), or with a shared front-door address the Record-Route that names it (whichever front door
    holds the address receives the call's in-dialog requests, also after the other one is lost)."""
    if not shared:
        return "record_route();"
    uri = f"{_host(shared)}:{port}"
    return (f'if ($proto == "tcp") {{ record_route_preset("{uri};transport=tcp"); }} '
            f'else {{ record_route_preset("{uri}"); }}')


def rpc_target(address: str, port: int) -> str:
    """kamcmd's -s value for a front door's RPC over TCP."""
    return f"tcp:{_host(address)}:{port}"


def srtp_check_lines(srtp: str, secure_signaling: int, warn_agent: str) -> str:
    """sip.srtp_secure_signaling at the front door: an offer carrying SDES keys (a=crypto, in RTP/SAVP or a
    best-effort RTP/AVP offer) that did not come over TLS (2: TLS to a sips: URI) is refused with 488 here, before
    the keys reach a worker: anyone on a UDP/TCP path has read them. The workers cannot tell (their hop is this
    relay on loopback). Which offers a worker takes (RTP/SAVP or not) is sip.srtp, applied by pjsua on the worker:
    RTP/SAVP offers pass here like any other (the codec check above looks at payload types only)."""
    if srtp == "off" or secure_signaling == 0:
        return ""
    plain, need = ('$proto != "tls"', "TLS") if secure_signaling == 1 else \
        ('($proto != "tls" || $rz != "sips")', "TLS to a sips: URI")
    return f"""    # sip.srtp_secure_signaling {secure_signaling}: SDES keys that crossed a hop in clear are not taken.
    if (has_body("application/sdp") && {plain} && search_body("a=crypto:")) {{
        xlog("L_NOTICE", "event=call_rejected reason=srtp_keys_in_clear proto=$proto src=$si\\n");
        append_to_reply("Warning: 399 {warn_agent} \\"SRTP keys (a=crypto) only over {need}\\"\\r\\n");
        sl_send_reply("488", "Not Acceptable Here");
        exit;
    }}
"""


def _codec_params(codecs: Sequence[str]) -> dict[str, str]:
    """What sdpops looks for in an offer (static payload types and names of the codecs the workers speak) and
    what the 488's Warning tells the caller to offer."""
    ids = [str(STATIC_PAYLOAD_TYPES[c]) for c in codecs if c in STATIC_PAYLOAD_TYPES]
    return {"codec_ids": ",".join(ids) or "0", "codec_names": ",".join(codecs),
            "codec_offer": " or ".join(f"{c}/{CODEC_RATES.get(c, 8000)}" for c in codecs)}


def _warn_agent(settings: Settings) -> str:
    """The Warning's agent (RFC 3261 20.43: host or pseudonym): the node's public or bind address."""
    return _host(settings.sip.public_address or settings.sip.bind_address)


def source_calls_lines(limit: int) -> dict[str, str]:
    """The cap on calls one source address holds at once (0: none). Counted from the INVITE (a dialog profile),
    so calls answered but never ACKed count too: 8 such INVITEs from one address (sipvicious svmap -m INVITE)
    held every slot of a 2-worker node for the 32 s a worker waits for the ACK (issue 13)."""
    if not limit:
        return {"source_calls_check": "", "source_calls_profile": ""}
    stat = FRONT_DOOR_STATS["source_calls"]
    check = f"""    if (get_profile_size("{SOURCE_PROFILE}", "$si", "$var(held)") && $var(held) >= {limit}) {{
        xlog("L_WARN", "event=call_rejected reason=source_calls_limit limit={limit} src=$si\\n");
        update_stat("{stat}", "+1");
        append_to_reply("Retry-After: {RETRY_AFTER_FULL_S}\\r\\n");
        sl_send_reply("503", "Too Many Calls From This Address");
        exit;
    }}
"""
    return {"source_calls_check": check, "source_calls_profile": f'    set_dlg_profile("{SOURCE_PROFILE}", "$si");\n'}


IN_DIALOG_STAT = "in_dialog_rejected_rate"     # in-dialog requests refused by the limits below


def in_dialog_limit_lines(per_dialog: int, per_source: int) -> str:
    """The front door's limit on in-dialog requests from callers (not from workers: their BYEs, re-INVITEs and
    NOTIFYs pass), per dialog (Call-ID) and per source address, in fixed 1 s windows (htable `indialog`, gone 3 s
    later). A re-INVITE storm inside an established call was relayed unlimited to the worker that holds it and the
    other calls on it (issue 13). BYE and ACK always pass: the caller can always hang up. 503 + Retry-After only
    fails the transaction (RFC 5057 5.1), the call goes on."""
    keys = (("dialog", "c:", "$ci", per_dialog), ("source", "s:", "$si", per_source))
    checks = [(name, f'$var(ikey) = "{prefix}" + {key} + "/" + $Ts;', limit) for name, prefix, key, limit in keys
              if limit]
    if not checks:
        return ""
    body = ""
    event, fields = "event=in_dialog_rejected ", "method=$rm src=$si call_id=$(ci{s.substr,0,64})"
    for name, key_line, limit in checks:
        body += f"""        {key_line}
        $var(icount) = $shtinc(indialog=>$var(ikey));
        if ($var(icount) == $null || $var(icount) <= 0) {{
            $sht(indialog=>$var(ikey)) = 1;
            $var(icount) = 1;
        }}
        if ($var(icount) > {limit}) {{
            if ($var(icount) == {limit + 1}) {{
                xlog("L_WARN", "{event}reason={name}_rate limit_per_s={limit} {fields}\\n");
            }}
            update_stat("{IN_DIALOG_STAT}", "+1");
            append_to_reply("Retry-After: 1\\r\\n");
            sl_send_reply("503", "Too Many Requests In Dialog");
            exit;
        }}
"""
    return f"""    if (!is_method("BYE|ACK") && !ds_is_from_list("{DISPATCHER_SET}", "2")) {{
{body}    }}
"""


def render_config(settings: Settings, paths: KamailioPaths, module_dir: str | None = None,
                  tls_cfg: Path | None = None) -> str:
    """The whole kamailio.cfg for this node (`tls_cfg`: the tls module's file when sip.tls is on)."""
    sip = settings.sip
    host = _host(sip.bind_address)
    advertise = f" advertise {_host(sip.public_address)}:{sip.port}" if sip.public_address else ""
    listens = "\n".join(f"listen={proto}:{host}:{sip.port}{advertise}" for proto in sip.transports)
    shared = settings.node.shared_address if settings.node.role == "front" else None
    if shared:
        listens += "\n" + "\n".join(f"listen={proto}:{_host(shared)}:{sip.port}" for proto in sip.transports)
    hash_expire = settings.turns.max_call_duration_s + HASH_EXPIRE_MARGIN_S
    return _TEMPLATE.format(
        node=settings.node_name,
        listens=listens,
        tcp="no" if "tcp" in sip.transports or sip.tls.enabled else "yes",     # TLS runs on the TCP stack
        **kamailio_tls.tls_lines(settings, tls_cfg),
        children=CHILDREN,
        tcp_children=TCP_CHILDREN,
        mpath=module_dir or find_module_dir(),
        ctl_socket=paths.ctl_socket,
        ctl_tcp=rpc_listen_line(settings),
        **{f"stat_{name}": stat for name, stat in FRONT_DOOR_STATS.items()},
        reload_delta=RELOAD_DELTA_S,
        dispatcher_list=paths.dispatcher_list,
        ds_set=DISPATCHER_SET,
        ds_alg=ALG_CALL_LOAD,
        ds_flags=DS_FLAGS_FAILOVER,
        ping_interval=DS_PING_INTERVAL_S,
        ping_from=f"sip:{settings.node_name}@{host}:{sip.port}",
        hash_initexpire=HASH_INITEXPIRE_S,
        hash_expire=hash_expire,
        fr_timer=FR_TIMER_MS,
        fr_inv_timer=FR_INV_TIMER_MS,
        rate=sip.new_calls_per_second,
        rate_per_source=min(sip.new_calls_per_source_per_second, sip.new_calls_per_second),
        source_profile=SOURCE_PROFILE,
        **source_calls_lines(sip.max_calls_per_source),
        in_dialog_limit=in_dialog_limit_lines(sip.in_dialog_requests_per_second,
                                              sip.in_dialog_requests_per_source_per_second),
        stat_in_dialog=IN_DIALOG_STAT,
        retry_full=RETRY_AFTER_FULL_S,
        retry_rate=RETRY_AFTER_RATE_S,
        allowed=_allowed_condition(sip.allowed_peers),
        udp_mtu=UDP_MTU_BYTES,
        mtu_proto="TCP" if "tcp" in sip.transports else "UDP",
        max_message=MAX_MESSAGE_BYTES,
        allow=ALLOW,
        warn_agent=_warn_agent(settings),
        **_codec_params(settings.media.codecs),
        srtp_check=srtp_check_lines(sip.srtp, sip.srtp_secure_signaling, _warn_agent(settings)),
        dlg_profile=DIALOG_PROFILE,
        record_route=_record_route(shared, sip.port),
        dlg_timeout=hash_expire,
        uac=registrations.render_modules(settings, paths.db_dir, module_dir=module_dir),
        outbound_check=registrations.render_outbound_check(settings),
        outbound_route=registrations.render_outbound_route(settings, DISPATCHER_SET),
    ).lstrip()


def write_config(settings: Settings, paths: KamailioPaths | None = None) -> KamailioPaths:
    """Generate kamailio.cfg and dispatcher.list under <data_dir>/kamailio and check the syntax with `kamailio -c`."""
    paths = paths or KamailioPaths.for_settings(settings)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    paths.dispatcher_list.write_text(render_dispatcher_list(settings), encoding="utf-8")
    registrations.write_table(settings, paths.db_dir)
    tls_cfg = kamailio_tls.write_tls(settings, paths.cfg.parent)
    paths.cfg.write_text(render_config(settings, paths, tls_cfg=tls_cfg), encoding="utf-8")
    return paths


def command(paths: KamailioPaths) -> list[str]:
    """Kamailio in the foreground (-DD: no daemon, children forked), logging to stderr (-E), own pid/runtime dir."""
    return [find_binary(), "-DD", "-E", "-f", str(paths.cfg), "-P", str(paths.pid_file),
            "-Y", str(paths.run_dir), "-m", str(SHM_MB), "-M", str(PKG_MB)]


async def check_config(paths: KamailioPaths) -> None:
    """Run `kamailio -c` on the generated file; raise KamailioError with Kamailio's own message if it is wrong."""
    proc = await asyncio.create_subprocess_exec(
        find_binary(), "-c", "-f", str(paths.cfg), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join(out.decode(errors="replace").strip().splitlines()[-8:])
        raise KamailioError(f"generated {paths.cfg} is rejected by kamailio -c:\n{tail}")


async def kamcmd(paths: KamailioPaths, *args: str, timeout_s: float = 5.0) -> str:
    """Run one RPC command through this node's Kamailio control socket and return its output."""
    return await kamcmd_at(f"unix:{paths.ctl_socket}", *args, timeout_s=timeout_s)


async def kamcmd_at(target: str, *args: str, timeout_s: float = 5.0) -> str:
    """Run one RPC command at `target` (unix:PATH, or tcp:HOST:PORT for another node's front door)."""
    proc = await asyncio.create_subprocess_exec(
        find_kamcmd(), "-s", target, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise KamailioError(f"kamcmd {' '.join(args)}: no answer within {timeout_s} s") from None
    if proc.returncode != 0:
        detail = (err or out).decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise KamailioError(f"kamcmd {' '.join(args)}: {detail}")
    return out.decode(errors="replace")


async def set_worker_state(paths: KamailioPaths, index: int, state: str) -> None:
    """Change a worker's dispatcher state: "d" drains it (no new calls, no probing, in-dialog requests still
    pass), "ip" takes it out until an OPTIONS probe succeeds, "ap" puts it back in rotation."""
    await kamcmd(paths, "dispatcher.set_duid_state", state, str(DISPATCHER_SET), worker_duid(index))


# Kamailio's own counts of new INVITEs by outcome (statistics module, group `script`).
FRONT_DOOR_STATS = {"source": "calls_rejected_source_rate", "node": "calls_rejected_node_rate",
                    "full": "calls_rejected_no_worker", "dispatched": "calls_dispatched",
                    "source_calls": "calls_rejected_source_calls"}
SOURCE_PROFILE = "source"        # dialogs by the caller's address: sip.max_calls_per_source


async def front_door_counts(paths: KamailioPaths) -> dict[str, int]:
    """{"source": n, "node": n, "full": n, "dispatched": n}: new INVITEs refused for the per-source share, the node's
    rate, no free worker, and those dispatched, since Kamailio started (counted by Kamailio, whoever reads replies)."""
    text = await kamcmd(paths, "stats.get_statistics", "script:")
    return parse_front_door_counts(text)


def parse_front_door_counts(text: str) -> dict[str, int]:
    found = dict(re.findall(r"script:(\w+) = (\d+)", text))
    return {name: int(found.get(stat, 0)) for name, stat in FRONT_DOOR_STATS.items()}


async def in_dialog_rejected(paths: KamailioPaths) -> int:
    """In-dialog requests the front door refused for sip.in_dialog_requests_per_second (and per source)."""
    text = await kamcmd(paths, "stats.get_statistics", "script:")      # the group; "group:name" is not a query
    found = re.search(rf"script:{IN_DIALOG_STAT} = (\d+)", text)
    return int(found.group(1)) if found else 0


async def worker_states(paths: KamailioPaths) -> dict[str, tuple[str, int]]:
    """{duid: (FLAGS, active call load)} as Kamailio's dispatcher sees them (e.g. {"w0": ("AP", 3)})."""
    text = await kamcmd(paths, "dispatcher.list")
    states: dict[str, tuple[str, int]] = {}
    for block in text.split("DEST: {")[1:]:
        duid = re.search(r"DUID: (\S+)", block)
        flags = re.search(r"FLAGS: (\S+)", block)
        load = re.search(r"DLGLOAD: (\d+)", block)
        if duid and flags:
            states[duid.group(1)] = (flags.group(1), int(load.group(1)) if load else 0)
    return states


async def rpc_at(target: str, *args: str, timeout_s: float = 5.0) -> str:
    """kamcmd_at, and a fault Kamailio answers is an error too: kamcmd exits 0 and prints `error: CODE - REASON`
    (e.g. `error: 500 - Ongoing reload` from a dispatcher.add refused within reload_delta)."""
    out = await kamcmd_at(target, *args, timeout_s=timeout_s)
    if out.startswith("error:"):
        raise KamailioError(f"kamcmd {' '.join(args)}: {out.strip()[:200]}")
    return out


@dataclass(frozen=True)
class Destination:
    """One dispatcher destination as a running Kamailio sees it."""

    uri: str
    duid: str
    flags: str           # e.g. "AP" active+probing, "IP" inactive, "DX" disabled (drained)
    load: int            # calls counted on it (call-load algorithm)


def parse_destinations(text: str) -> list[Destination]:
    """`dispatcher.list` output -> destinations ("No Destination Sets" -> [])."""
    found: list[Destination] = []
    for block in text.split("DEST: {")[1:]:
        uri = re.search(r"URI: (\S+)", block)
        duid = re.search(r"DUID: (\S+)", block)
        flags = re.search(r"FLAGS: (\S+)", block)
        load = re.search(r"DLGLOAD: (\d+)", block)
        if uri and flags:
            found.append(Destination(uri.group(1), duid.group(1) if duid else "", flags.group(1),
                                     int(load.group(1)) if load else 0))
    return found


async def destinations_at(target: str) -> list[Destination]:
    """Every destination of the dispatcher at `target`; [] while it has none (Kamailio answers 500 then)."""
    try:
        text = await rpc_at(target, "dispatcher.list")
    except KamailioError as exc:
        if "No Destination Sets" in str(exc):
            return []
        raise
    return parse_destinations(text)


async def worker_dialogs(paths: KamailioPaths, uri: str) -> list[tuple[str, str]]:
    """(h_entry, h_id) of the dialogs answered by the worker at dispatcher destination `uri`."""
    return await worker_dialogs_at(f"unix:{paths.ctl_socket}", uri)


async def worker_dialogs_at(target: str, uri: str) -> list[tuple[str, str]]:
    text = await kamcmd_at(target, "dlg.profile_list", DIALOG_PROFILE, uri)
    return re.findall(r"h_entry:\s*(\d+)\s+h_id:\s*(\d+)", text)


async def end_worker_dialogs(paths: KamailioPaths, uri: str) -> int:
    """BYE both sides of every dialog the worker at `uri` answered (it died: its side of the BYE goes nowhere, the
    caller's ends the call at once instead of after its own media timeout). Returns how many were ended."""
    return await end_worker_dialogs_at(f"unix:{paths.ctl_socket}", uri)


async def end_worker_dialogs_at(target: str, uri: str) -> int:
    ended = 0
    for h_entry, h_id in await worker_dialogs_at(target, uri):
        try:
            await kamcmd_at(target, "dlg.end_dlg", h_entry, h_id)
            ended += 1
        except KamailioError:
            continue                     # ended meanwhile (the caller hung up): nothing left to do
    return ended


# The routing logic. Doubled braces are literal braces for str.format.
_TEMPLATE = r"""
#!KAMAILIO
# Generated by veratur (veratur/kamailio.py) for node {node}. Do not edit: change config/veratur.yml instead.

####### Global parameters #########
debug=2
log_stderror=yes
# Parse errors are logged by the core at this level with the whole message in them (caller numbers included):
# keep them below `debug`; the script logs a bounded summary of what it rejects instead.
corelog=3
children={children}
tcp_children={tcp_children}
disable_tcp={tcp}
auto_aliases=no
server_header="Server: veratur-kamailio"
user_agent_header="User-Agent: veratur-kamailio"
{listens}
{tls_globals}
# RFC 3261 18.1.1: a relayed request above {udp_mtu} bytes goes to the worker over TCP (workers listen on both).
udp_mtu={udp_mtu}
udp_mtu_try_proto={mtu_proto}

mpath="{mpath}"
{tls_module}
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "ipops.so"
loadmodule "pipelimit.so"
loadmodule "htable.so"
loadmodule "dispatcher.so"
loadmodule "dialog.so"
loadmodule "statistics.so"
loadmodule "sdpops.so"
loadmodule "nathelper.so"
{uac}
####### Module parameters #########
modparam("ctl", "binrpc", "unix:{ctl_socket}")
{ctl_tcp}
# tm: a dead or frozen worker must be detected in seconds, not after the 30 s default.
modparam("tm", "fr_timer", {fr_timer})
modparam("tm", "fr_inv_timer", {fr_inv_timer})

modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 0)

# pipelimit: one pipe for new INVITEs, counted per 1 s interval.
modparam("pipelimit", "timer_interval", 1)
# newcalls: new INVITEs per source address and second ("IP/epoch second" keys, gone 3 s later), so one flooding
# source spends only its own share and not the node's whole rate.
modparam("htable", "htable", "newcalls=>size=12;autoexpire=3;")
# indialog: in-dialog requests per dialog ("c:Call-ID/second") and per source ("s:IP/second"), gone 3 s later.
modparam("htable", "htable", "indialog=>size=12;autoexpire=3;")
# What the front door refused, counted by Kamailio itself (`kamcmd stats.get_statistics script:`): the figures of a
# flood do not depend on a client reading every answer.
modparam("statistics", "variable", "{stat_source}")
modparam("statistics", "variable", "{stat_node}")
modparam("statistics", "variable", "{stat_full}")
modparam("statistics", "variable", "{stat_dispatched}")
modparam("statistics", "variable", "{stat_source_calls}")
modparam("statistics", "variable", "{stat_in_dialog}")

# dispatcher: call-load balancing over the workers, OPTIONS probing, load slots that expire.
modparam("dispatcher", "list_file", "{dispatcher_list}")
modparam("dispatcher", "flags", {ds_flags})
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "xavp_ctx", "_dsctx_")
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "{ping_from}")
modparam("dispatcher", "ds_ping_interval", {ping_interval})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_hash_size", 9)
modparam("dispatcher", "ds_hash_initexpire", {hash_initexpire})
modparam("dispatcher", "ds_hash_expire", {hash_expire})
modparam("dispatcher", "ds_hash_check_interval", 10)
modparam("dispatcher", "reload_delta", {reload_delta})

# dialog: which worker holds which call, so the supervisor can end (BYE) the calls of a worker that died.
modparam("dialog", "profiles_with_value", "{dlg_profile};{source_profile}")
modparam("dialog", "default_timeout", {dlg_timeout})
modparam("dialog", "enable_stats", 0)

####### Routing logic ########
request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    # Malformed requests get 400 from sanity_check itself and go no further.
    if (!sanity_check("17895", "7")) {{
        xlog("L_NOTICE", "event=sip_rejected reason=sanity src=$si\n");
        exit;
    }}
    # Workers (dispatcher destinations, any port/transport) may always talk back through us.
    if (!ds_is_from_list("{ds_set}", "3") && !({allowed})) {{
        xlog("L_NOTICE", "event=sip_rejected reason=source_not_allowed src=$si method=$(rm{{s.substr,0,16}})\n");
        if (!is_method("ACK")) {{
            sl_send_reply("403", "Forbidden");
        }}
        exit;
    }}
    route(NAT_CALLER);
    # RFC 3261 7.1: method names are case-sensitive. Kamailio's parser takes "invite" for INVITE but the worker's
    # answer (CSeq "1 invite") then matches no transaction here: the worker holds an answered call slot for 32 s
    # (fuzz run). Only the exact methods we serve reach a worker.
    if ($rm != "INVITE" && $rm != "ACK" && $rm != "BYE" && $rm != "CANCEL" && $rm != "OPTIONS" && $rm != "INFO"
            && $rm != "REFER" && $rm != "NOTIFY" && $rm != "PRACK" && $rm != "UPDATE") {{
        xlog("L_NOTICE", "event=sip_rejected reason=unknown_method src=$si\n");
        if (!is_method("ACK")) {{
            append_to_reply("Allow: {allow}\r\n");
            sl_send_reply("405", "Method Not Allowed");
        }}
        exit;
    }}
    # Headers that must appear once (the core already refuses a second CSeq): with two of them we and the worker
    # may read different ones, its answers then match nothing here and it retransmits them on a held slot.
    if ($hdrc(CSeq) != 1 || $hdrc(Call-ID) != 1 || $hdrc(From) != 1 || $hdrc(To) != 1
            || $hdrc(Content-Length) > 1 || $hdrc(Content-Type) > 1 || $hdrc(Max-Forwards) > 1) {{
        xlog("L_NOTICE", "event=sip_rejected reason=repeated_header src=$si\n");
        if (!is_method("ACK")) {{
            sl_send_reply("400", "Repeated Header");
        }}
        exit;
    }}
    # pjsip drops without an answer what it cannot parse, and each such INVITE holds a call slot here for fr_timer
    # on every worker it fails over to. Two shapes got through in the fuzz run: a NUL byte in the headers (regex
    # search stops at it, so the end of the headers is not found) and a folded header made of blank lines.
    if (!search("\r\n\r\n") || search("\r\n[ \t]+\r\n")) {{
        xlog("L_NOTICE", "event=sip_rejected reason=unparsable_header src=$si\n");
        if (!is_method("ACK")) {{
            sl_send_reply("400", "Bad Header");
        }}
        exit;
    }}
    # What a worker cannot receive whole is refused here, before any worker spends a transaction on it.
    if ($ml > {max_message}) {{
        xlog("L_NOTICE", "event=sip_rejected reason=too_large bytes=$ml limit={max_message} src=$si\n");
        if (!is_method("ACK")) {{
            sl_send_reply("513", "Message Too Large");
        }}
        exit;
    }}

    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            ds_load_update();
            t_relay();
        }}
        exit;
    }}

    if (has_totag()) {{
        route(WITHINDLG);
        exit;
    }}

    # Out of dialog from here on; retransmissions of a request already being handled are absorbed here.
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (t_precheck_trans()) {{
        t_check_trans();
        exit;
    }}
    t_check_trans();

    if (is_method("OPTIONS")) {{
        # Keep-alives and health checks addressed to the node itself.
        append_to_reply("Allow: {allow}\r\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    if (loose_route()) {{
        sl_send_reply("403", "Preloaded Route Not Allowed");
        exit;
    }}
    if (!is_method("INVITE")) {{
        append_to_reply("Allow: {allow}\r\n");
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
{outbound_check}    route(NEWCALL);
}}
{outbound_route}
# A new call: codecs, rate limit, choose the least-loaded worker with a free slot, relay.
route[NEWCALL] {{
    # An offer with none of our codecs (G.722-only, G.729, opus...) is answered here with a Warning that says what
    # to offer (RFC 3261 20.43, 305), before it costs a worker a transaction. No SDP (late offer) or a multipart
    # body (SIP-I) goes on: the worker offers or negotiates itself.
    if (has_body("application/sdp") && !sdp_with_codecs_by_id("{codec_ids}")
            && !sdp_with_codecs_by_name("{codec_names}")) {{
        xlog("L_NOTICE", "event=call_rejected reason=no_common_codec src=$si\n");
        append_to_reply("Warning: 305 {warn_agent} \"Incompatible media format: offer {codec_offer}\"\r\n");
        append_to_reply("Accept: application/sdp\r\n");
        sl_send_reply("488", "Not Acceptable Here");
        exit;
    }}
{srtp_check}    # $shtinc creates no item: the first INVITE of a source in a second sets it.
    $var(window) = $si + "/" + $Ts;
    $var(from_source) = $shtinc(newcalls=>$var(window));
    if ($var(from_source) == $null || $var(from_source) <= 0) {{
        $sht(newcalls=>$var(window)) = 1;
        $var(from_source) = 1;
    }}
    if ($var(from_source) > {rate_per_source}) {{
        if ($var(from_source) == {rate_per_source} + 1) {{
            xlog("L_WARN", "event=call_rejected reason=source_rate_limit limit_per_s={rate_per_source} src=$si\n");
        }}
        update_stat("{stat_source}", "+1");
        append_to_reply("Retry-After: {retry_rate}\r\n");
        sl_send_reply("503", "Too Many New Calls From This Address");
        exit;
    }}
    if (!pl_check("new_invites", "TAILDROP", "{rate}")) {{
        xlog("L_WARN", "event=call_rejected reason=rate_limit limit_per_s={rate} src=$si\n");
        update_stat("{stat_node}", "+1");
        append_to_reply("Retry-After: {retry_rate}\r\n");
        sl_send_reply("503", "Too Many New Calls");
        exit;
    }}
{source_calls_check}    if (!ds_select_dst("{ds_set}", "{ds_alg}")) {{
        xlog("L_WARN", "event=call_rejected reason=no_worker_free src=$si\n");
        update_stat("{stat_full}", "+1");
        append_to_reply("Retry-After: {retry_full}\r\n");
        sl_send_reply("503", "Service Unavailable");
        exit;
    }}
    xlog("L_INFO", "event=call_dispatched dst=$du src=$si\n");
    update_stat("{stat_dispatched}", "+1");
    dlg_manage();
{source_calls_profile}
    {record_route}
    t_on_reply("DISPATCH_REPLY");
    t_on_failure("DISPATCH_FAILURE");
    if (!t_relay()) {{
        # Not relayed (e.g. the worker's TCP connection refused): the slot ds_select_dst took must not leak.
        ds_load_unset();
        if (t_is_canceled()) {{
            # The caller's CANCEL overtook its INVITE inside the door (another receiver process): 487, not the
            # 500 sl_reply_error() gave (seen 1 in 12 CANCEL-at-once calls at load 12).
            t_reply("487", "Request Terminated");
            exit;
        }}
        sl_reply_error();
    }}
    exit;
}}

route[WITHINDLG] {{
{in_dialog_limit}    if (is_method("INFO")) {{
        route(INFO_DTMF);
    }}
    if (loose_route()) {{
        if (is_method("BYE")) {{
            # Frees the worker's call slot, whichever side hangs up.
            ds_load_update();
        }}
        route(RELAY);
        exit;
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    sl_send_reply("404", "Not Here");
    exit;
}}

# DTMF by SIP INFO: pjsua reads application/dtmf-relay ("Signal=5"); some carriers and PBXs send
# application/dtmf (the bare key), which pjsua answers 500: rewritten here to dtmf-relay. Any other INFO body gets
# 415 with what we accept; an empty INFO (a keep-alive) gets 200 here.
route[INFO_DTMF] {{
    # has_body("type/subtype") cannot tell these apart (every subtype it does not know is the same "unknown").
    $var(ctype) = $(cT{{s.tolower}});
    if ($var(ctype) =~ "^application/dtmf *(;.*)?$") {{
        $var(key) = $(rb{{s.trim}});
        if (!($var(key) =~ "^[0-9*#A-Da-d]$")) {{
            sl_send_reply("400", "Bad DTMF Key");
            exit;
        }}
        set_body("Signal=$var(key)\r\nDuration=160\r\n", "application/dtmf-relay");
        return;
    }}
    if (!has_body()) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!($var(ctype) =~ "^application/dtmf-relay *(;.*)?$")) {{
        append_to_reply("Accept: application/dtmf-relay, application/dtmf\r\n");
        sl_send_reply("415", "Unsupported Media Type");
        exit;
    }}
}}

# Callers behind NAT: a phone or PBX that advertises its private address in Via/Contact (no STUN, no ALG) is
# answered at the address it sent from (force_rport + received), and its Contact -- where the worker sends BYE,
# re-INVITE, NOTIFY -- becomes that address too (fix_nated_contact), else the portal's hang-up never reaches it.
# Only a request straight from its user agent (one Via) and not from a worker: behind a front door the source is
# the front door, not the caller. Tests: 1 = Contact in RFC 1918 space, 2 = Via host is not the source address
# (the Via *port* test, 16, is left out: a TCP client sends from an ephemeral port and is no NAT case).
route[NAT_CALLER] {{
    # A worker by address *and* port (mode 2: any protocol), since on one host callers share the workers' IP; over
    # TCP/TLS a worker sends from an ephemeral port, so there its address alone (mode 3) says it is one.
    if (ds_is_from_list("{ds_set}", "2") || ($proto != "udp" && ds_is_from_list("{ds_set}", "3"))
            || $hdrc(Via) != 1 || $hdr(Via) =~ ",") {{
        return;
    }}
    force_rport();
    if (nat_uac_test("3")) {{
        if (is_present_hf("Contact") && $hdr(Contact) != "*") {{
            fix_nated_contact();
        }}
        if (is_method("INVITE")) {{
            xlog("L_INFO", "event=nat_caller src=$si:$sp proto=$proto\n");
        }}
    }}
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

# Replies from outside (a NATed phone answering a call the node places, or an in-dialog request a worker sent):
# the same Contact fix, so the worker's ACK/BYE reach the address the answer came from. Not through a proxy
# that record-routes (a PBX): its route set carries the in-dialog requests, and its Contact is the phone's.
reply_route {{
    if (!ds_is_from_list("{ds_set}", "2") && !is_present_hf("Record-Route") && is_present_hf("Contact")
            && nat_uac_test("1")) {{
        fix_nated_contact();
    }}
}}

onreply_route[DISPATCH_REPLY] {{
    if (is_method("INVITE") && status =~ "^2[0-9][0-9]$") {{
        # Confirmed call: the slot now lives until BYE (or ds_hash_expire); the dialog is filed under the
        # worker that answered (the last dispatcher destination tried).
        ds_load_update();
        set_dlg_profile("{dlg_profile}", "$xavp(_dsdst_=>uri)");
    }}
}}

failure_route[DISPATCH_FAILURE] {{
    if (t_is_canceled()) {{
        exit;
    }}
    if (t_check_status("486|503|408|500") || (t_branch_timeout() && !t_branch_replied())) {{
        if (t_branch_timeout() && !t_branch_replied()) {{
            # One unanswered transaction says nothing about the worker (a message it could not parse, a
            # stale retransmission): only OPTIONS probing takes a worker out of rotation.
            xlog("L_WARN", "event=worker_timeout dst=$du\n");
        }}
        # ds_next_dst() only when another destination remains: with none left it leaks the load count.
        if ($xavp(_dsdst_[1]=>uri) != $null && ds_next_dst()) {{
            xlog("L_NOTICE", "event=call_failover status=$T_reply_code next=$du\n");
            t_on_reply("DISPATCH_REPLY");
            t_on_failure("DISPATCH_FAILURE");
            route(RELAY);
            exit;
        }}
        ds_load_unset();
        xlog("L_WARN", "event=call_rejected reason=all_workers_failed status=$T_reply_code\n");
        append_to_reply("Retry-After: {retry_full}\r\n");
        t_reply("503", "Service Unavailable");
        exit;
    }}
    # Any other final failure (404, 480, 488, ...) goes back to the caller as it is; the slot is freed.
    ds_load_unset();
}}

# Every reply Kamailio receives passes here first: the registrar's refusals of our REGISTERs are logged (the
# registration's name and the registrar's status and reason only; never the user, which may be a phone number).
reply_route {{
    # 401/407 is the normal first answer to every REGISTER (digest challenge): uac itself logs a failed retry.
    if ($rm == "REGISTER" && $rs >= 300 && $rs != 401 && $rs != 407) {{
        xlog("L_WARN", "event=registration_reply status=$rs reason=$(rr{{s.substr,0,40}}) registrar=$si:$sp\n");
    }}
}}

# Requests Kamailio sends itself: the BYEs of dlg.end_dlg (the supervisor ends a dead worker's dialogs) pass no
# request_route, so without this the dead worker's call-load slot stayed counted for ds_hash_expire (~17 min) and the
# restarted worker came back short of slots (tests/chaos/test_dead_worker_dialogs.py). Both BYEs of a dialog come
# here; the second finds no slot left.
event_route[tm:local-request] {{
    if (is_method("BYE")) {{
        ds_load_update();
    }}
}}

event_route[dispatcher:dst-down] {{
    xlog("L_WARN", "event=worker_down dst=$rm $ru\n");
}}

event_route[dispatcher:dst-up] {{
    xlog("L_NOTICE", "event=worker_up dst=$rm $ru\n");
}}
"""

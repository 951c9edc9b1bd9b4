"""Who may send a call RTP: a kernel filter on pjmedia's own media sockets (issue 13, "RTP bleed").

pjmedia latches the remote RTP address: it sends the call's audio to wherever RTP comes from, so a NATed phone
whose SDP names a private address is still reached. While the caller sends nothing (muted, on hold, a UAS that
does not stream) the first packet from *any* address switches the stream at once, and after 10 consecutive
packets when the caller has sent before (`PJMEDIA_RTP_NAT_PROBATION_CNT`). Measured with a silent caller and a
stranger streaming to the worker's media port: the stranger got all 180 packets of the call, the whole greeting
(60 voiced), the caller none, and the stranger's RFC 4733 digit reached the dialogue. pjsua2 2.15.1 has no
setting for it (`PJMEDIA_UDP_NO_SRC_ADDR_CHECKING` and `PJMEDIA_TRANSPORT_SWITCH_REMOTE_ADDR` are compile-time or
transport-creation options the Python API does not reach), so the edge filters below pjmedia instead: a classic
BPF socket filter (SO_ATTACH_FILTER) on the call's RTP and RTCP sockets lets through only datagrams whose IPv4
source is a signalled address of the call (the SDP's connection address, the caller's Contact and the address the
INVITE came from) or in `sip.rtp_trusted_networks`. Other sources never reach pjmedia: no latch, no injected
audio or digits, and they do not keep a silent call alive past `sip.media_timeout_s`. A source port change on a
trusted host (the NAT case that keeps its IP) still latches as before. The edge attaches the filter in the media
state callback, which pjsua runs inside the answer before the 200 (and its SDP, the port) leaves; it follows a
re-INVITE that moves the media. The filter replaces itself: attaching it again is how it is updated.

Linux only, IPv4 media sockets only (elsewhere the filter is not attached, and that is logged once).
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Iterable, Sequence

from foundation.logs import kv

log = logging.getLogger("ivr.sip.rtp_sources")

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)   # Linux asm-generic/socket.h
SKF_NET_OFF = -0x100000          # classic BPF: load relative to the network (IP) header
IPV4_SOURCE_OFFSET = 12
MAX_NETWORKS = 64                # a jump offset is one byte: 3 instructions a network stays well inside it
_BPF_LD_W_ABS, _BPF_ALU_AND_K, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x54, 0x15, 0x06
_ACCEPT, _DROP = 0xFFFFFFFF, 0

_URI_HOST = re.compile(r"sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?\s]+)", re.IGNORECASE)
_warned: set[str] = set()


def source_program(networks: Sequence[ipaddress.IPv4Network]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program accepting an IPv4 datagram whose source is in `networks`, dropping the rest."""
    if not 0 < len(networks) <= MAX_NETWORKS:
        raise ValueError(f"1 to {MAX_NETWORKS} networks, got {len(networks)}")
    accept_at = 3 * len(networks) + 1
    program = []
    for index, net in enumerate(networks):
        program.append((_BPF_LD_W_ABS, 0, 0, (SKF_NET_OFF + IPV4_SOURCE_OFFSET) & 0xFFFFFFFF))
        program.append((_BPF_ALU_AND_K, 0, 0, int(net.netmask)))
        jeq_at = 3 * index + 2
        program.append((_BPF_JEQ_K, accept_at - jeq_at - 1, 0, int(net.network_address)))
    program += [(_BPF_RET_K, 0, 0, _DROP), (_BPF_RET_K, 0, 0, _ACCEPT)]
    return program


def attach_source_filter(sock: socket.socket, networks: Sequence[ipaddress.IPv4Network]) -> None:
    """Replace `sock`'s socket filter by one that only lets `networks` in (the kernel copies the program)."""
    program = source_program(networks)
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(program), ctypes.addressof(code)))


def signalled_hosts(*uris_or_hosts: str) -> set[str]:
    """The IPv4 hosts of SIP URIs (a Contact), "host:port" strings (pjsua's remote RTP address) and bare hosts."""
    hosts: set[str] = set()
    for text in uris_or_hosts:
        match = _URI_HOST.search(text)
        hosts.add(match.group(1) if match else text.rsplit(":", 1)[0] if text.count(":") == 1 else text)
    return {h for h in hosts if _ipv4(h) is not None}


def trusted_networks(hosts: Iterable[str], extra: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
                     ) -> list[ipaddress.IPv4Network]:
    """The call's signalled IPv4 hosts as /32s plus the configured IPv4 networks; 0.0.0.0 (RFC 2543 hold) is no
    source and is left out."""
    nets = {ipaddress.IPv4Network(f"{h}/32") for h in hosts if (a := _ipv4(h)) is not None and not a.is_unspecified}
    nets.update(n for n in extra if isinstance(n, ipaddress.IPv4Network))
    return sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen))[:MAX_NETWORKS]


def media_sockets(rtp_port: int) -> list[int]:
    """This process's UDP IPv4 sockets bound to `rtp_port` and `rtp_port + 1` (the stream's RTP and RTCP): the
    fds pjmedia opened, found by their bound port (pjsua2 does not hand out its sockets)."""
    found: list[int] = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.type == socket.SOCK_DGRAM and sock.family == socket.AF_INET \
                        and sock.getsockname()[1] in (rtp_port, rtp_port + 1):
                    found.append(fd)
        except OSError:                   # closed meanwhile, or not a socket we can ask: not ours to filter
            continue
    return found


def restrict_media(call_id: str, local_rtp: str, networks: Sequence[ipaddress.IPv4Network]) -> int:
    """Attach the source filter to the RTP/RTCP sockets of the stream bound to `local_rtp` ("host:port");
    return how many sockets got it (0: nothing filtered, logged once per reason)."""
    if not sys.platform.startswith("linux"):
        _warn_once("not_linux", "RTP source filter needs Linux: media sources are not checked")
        return 0
    port = local_rtp.rpartition(":")[2]
    if not port.isdigit() or not networks:
        return 0
    done = 0
    for fd in media_sockets(int(port)):
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            attach_source_filter(sock, networks)
            done += 1
    if not done:                          # an IPv6 media socket (the filter reads IPv4 sources), or none found
        _warn_once("not_attached", "RTP source filter not attached: media sources are not checked",
                   call_id=call_id, local=local_rtp)
    return done


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address if isinstance(address, ipaddress.IPv4Address) else None


def _warn_once(key: str, message: str, **fields: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s %s", message, kv(**fields))

"""What the SIP edge is configured with (`EdgeConfig`), what it reports (`EdgeState`) and how it fails
(`SipError`). Plain data, no pjsua2: ivr.sip.edge re-exports these names."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from foundation.config import PJSUA_MAX_CALLS, Settings
from ivr.sip.leg import SipLeg

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SipError(Exception):
    """An outbound call or SIP command failed; `status_code` is the SIP code when there is one."""

    def __init__(self, message: str, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the edge needs, taken from Settings (worker) or given directly (test caller)."""

    bind_address: str = "127.0.0.1"
    port: int = 0                                   # 0 = any free port (the caller)
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str | None = None
    user: str = "veratur"
    max_calls: int = PJSUA_MAX_CALLS
    allowed_peers: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
    accept_calls: bool = True                       # False: refuse every INVITE (the test caller)
    rtp_port_start: int = 20000
    rtp_port_range: int = 2000
    randomize_rtp_port: bool = False
    sample_rate: int = 8000
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    answer_delay_ms: int = 0
    media_timeout_s: float = 30.0
    hold_timeout_s: float = 300.0
    max_dtmf_per_second: int = 20                   # digits a leg hands to the session per second (sip.max_dtmf_per_second)
    transfer_timeout_s: float = 15.0
    escalation_mode: str = "refer"
    follow_refer: bool = False                      # a phone (the test caller) follows REFERs; the portal refuses
    node: str = "veratur"
    user_agent: str = "Veratur"                     # User-Agent/Server product string (sip.user_agent)
    pj_log_level: int = 1
    # RTP only from the call's signalled addresses and these networks (sip.rtp_sources, ivr.sip.rtp_sources);
    # "any" (the default here: the test caller is a phone) leaves the latching to pjmedia.
    rtp_sources: str = "any"
    rtp_trusted_networks: tuple[Network, ...] = ()
    srtp: str = "off"                               # sip.srtp: off, optional, mandatory (SDES keys, RFC 4568)
    # pjsua's own check of the hop an SDES offer came over (0: any). A worker's hop is always the front door's
    # UDP/TCP relay, so the worker keeps 0 and Kamailio applies sip.srtp_secure_signaling (veratur/kamailio.py).
    srtp_secure_signaling: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, port: int, node: str, index: int = 0) -> EdgeConfig:
        sip = settings.sip
        rtp_start, rtp_range = sip.worker_rtp_ports(index)
        # Behind Kamailio a worker takes calls only from the front doors: a caller reaching the worker's port
        # directly would bypass the front door's rate limit and checks.
        peers = settings.worker_sources() if sip.use_kamailio else sip.allowed_peers
        return cls(
            bind_address=sip.bind_address, port=port, transports=tuple(sip.transports),
            public_address=sip.public_address, max_calls=sip.max_calls_per_worker,
            allowed_peers=tuple(ipaddress.ip_network(n, strict=False) for n in peers),
            user_agent=sip.user_agent,
            rtp_port_start=rtp_start, rtp_port_range=rtp_range,
            sample_rate=settings.media.sample_rate, codecs=tuple(settings.media.codecs),
            answer_delay_ms=sip.answer_delay_ms, media_timeout_s=sip.media_timeout_s,
            hold_timeout_s=sip.hold_timeout_s, max_dtmf_per_second=sip.max_dtmf_per_second,
            transfer_timeout_s=settings.escalation.transfer_timeout_s,
            escalation_mode=settings.escalation.mode, node=node, rtp_sources=sip.rtp_sources, srtp=sip.srtp,
            rtp_trusted_networks=tuple(ipaddress.ip_network(n, strict=False) for n in sip.rtp_trusted_networks))


@dataclass
class EdgeState:
    """A snapshot of the edge for metrics and leak checks (taken on the owner thread)."""

    calls: int = 0                  # pjsua Call objects we still hold (answered, ringing or being rejected)
    legs: int = 0                   # calls with a leg (answered or being answered)
    media_ports: int = 0            # ports in pjsua's conference bridge (the null sound port counts as 1)
    ports_pooled: int = 0           # our media ports created (kept and reused, see ivr.sip.media_port)
    ports_in_use: int = 0           # ... of which attached to a call
    draining: bool = False
    rejected: dict[int, int] = field(default_factory=dict)
    rx_callback_ns: int = 0
    tx_callback_ns: int = 0
    rx_frames: int = 0
    tx_frames: int = 0
    tx_underruns: int = 0
    dtmf_digits: int = 0
    legs_total: int = 0

    def add_leg(self, leg: SipLeg) -> None:
        self.rx_callback_ns += leg.rx_callback_ns
        self.tx_callback_ns += leg.tx_callback_ns
        self.rx_frames += leg.rx_frames
        self.tx_frames += leg.tx_frames
        self.tx_underruns += leg.tx_underruns
        self.dtmf_digits += leg.dtmf_digits
        self.legs_total += 1

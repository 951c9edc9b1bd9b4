"""Each worker of a node gets its own slice of the RTP port range (no failed bind() per call setup)."""
from __future__ import annotations

from foundation.config import SipConfig


def test_workers_get_disjoint_slices_inside_the_range() -> None:
    sip = SipConfig(workers=4, rtp_port_start=20000, rtp_port_range=2000)
    slices = [sip.worker_rtp_ports(i) for i in range(4)]
    assert slices == [(20000, 500), (20500, 500), (21000, 500), (21500, 500)]
    ports = [set(range(start, start + size)) for start, size in slices]
    assert all(not (a & b) for i, a in enumerate(ports) for b in ports[i + 1:])


def test_a_range_too_small_to_slice_is_shared() -> None:
    sip = SipConfig(workers=8, rtp_port_start=30000, rtp_port_range=40)
    assert sip.worker_rtp_ports(5) == (30000, 40)

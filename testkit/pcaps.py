"""Writers of the RTP pcaps sipp plays (`play_pcap_audio`): PCMU in 20 ms packets, and RFC 4733 digits.

sipp's bundled g711a.pcap is PCMA in 30 ms packets, which is not what the portal is tested for; these are
generated from PCM we make ourselves (tones, espeak-ng speech). sipp rewrites addresses and ports and sends
each packet at its capture time offset, so only the RTP inside matters.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

PCMU_PT = 0
TELEPHONE_EVENT_PT = 101
SAMPLES_PER_PACKET = 160          # 20 ms at 8 kHz
PACKET_S = 0.02
DTMF_EVENTS = {d: i for i, d in enumerate("0123456789*#")} | {"A": 12, "B": 13, "C": 14, "D": 15}
SSRC = 0x5E7A7A01

_MU_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def ulaw_encode(pcm: bytes) -> bytes:
    """G.711 mu-law of s16le samples (the reference 14-bit algorithm, as in ITU-T G.191)."""
    v = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 2
    negative = v < 0
    v = np.minimum(np.minimum(np.where(negative, -v, v), 8159) + 33, 0x1FFF)
    segment = np.searchsorted(_MU_SEGMENT_ENDS, v)
    value = (segment << 4) | ((v >> (segment + 1)) & 0x0F)
    return (value ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8).tobytes()


def _udp_frame(payload: bytes, src_port: int = 40000, dst_port: int = 40002) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    ether = b"\x00" * 12 + b"\x08\x00"
    return ether + ip + udp


def _write(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for t, rtp in packets:
        frame = _udp_frame(rtp)
        sec = int(t)
        out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def _rtp(pt: int, seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, SSRC) + payload


def write_pcmu_pcap(path: Path, pcm: bytes) -> Path:
    """s16le 8 kHz PCM as PCMU RTP in 20 ms packets."""
    ulaw = ulaw_encode(pcm)
    n = SAMPLES_PER_PACKET
    packets = [(i * PACKET_S, _rtp(PCMU_PT, i, i * n, ulaw[i * n:(i + 1) * n].ljust(n, b"\xff"), i == 0))
               for i in range(len(ulaw) // n)]
    return _write(path, packets)


def write_dtmf_pcap(path: Path, digits: str, event_ms: int = 160, gap_ms: int = 240, after_s: float = 0.0,
                    pt: int = TELEPHONE_EVENT_PT) -> Path:
    """RFC 4733 events, one per digit: start packet with marker, updates every 20 ms, three end packets.

    `after_s`: the audio pcap played before this one on the same stream lasts this long; sequence numbers and
    timestamps continue from there, since pjmedia drops a stream whose sequence jumps back (same SSRC).
    `pt`: the negotiated payload type (pjsua2 offers telephone-event as 120 in the INVITEs it sends)."""
    packets: list[tuple[float, bytes]] = []
    seq, t = int(after_s / PACKET_S) + 1, 0.0
    ts_base = int(after_s * 8000) + SAMPLES_PER_PACKET
    for digit in digits:
        event = DTMF_EVENTS[digit]
        ts = ts_base + int(t * 8000)
        steps = event_ms // 20
        for k in range(1, steps + 1):
            end = k == steps
            repeats = 3 if end else 1
            for _ in range(repeats):
                payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, k * SAMPLES_PER_PACKET)
                packets.append((t + (k - 1) * PACKET_S, _rtp(pt, seq, ts, payload, k == 1)))
                seq += 1
        t += (event_ms + gap_ms) / 1000
    return _write(path, packets)


def tone_pcm(freq_hz: float, seconds: float, amplitude: float = 0.3, rate: int = 8000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32767).astype("<i2").tobytes()


def silence_pcm(seconds: float, rate: int = 8000) -> bytes:
    return bytes(int(rate * seconds) * 2)


def dtmf_timeline(path: Path, keys: list[tuple[float, str]], *, first_seq: int = 1, first_ts: int = 160,
                  event_ms: int = 160, gap_ms: int = 240) -> tuple[Path, int, int]:
    """RFC 4733 keys at chosen times: `keys` = [(start s, digits)], one RTP stream whose sequence numbers keep
    rising across pcaps (`first_seq`/`first_ts` continue a previous one); returns (path, next seq, next timestamp)."""
    packets: list[tuple[float, bytes]] = []
    seq = first_seq
    last_t = 0.0
    for start, digits in keys:
        t = start
        for digit in digits:
            ts = first_ts + int(t * 8000)
            steps = event_ms // 20
            for k in range(1, steps + 1):
                end = k == steps
                payload = struct.pack("!BBH", DTMF_EVENTS[digit], (0x80 if end else 0) | 10,
                                      k * SAMPLES_PER_PACKET)
                for _ in range(3 if end else 1):
                    packets.append((t + (k - 1) * PACKET_S, _rtp(TELEPHONE_EVENT_PT, seq, ts, payload, k == 1)))
                    seq += 1
            t += (event_ms + gap_ms) / 1000
            last_t = t
    _write(path, packets)
    return path, seq + 10, first_ts + int((last_t + 1) * 8000)

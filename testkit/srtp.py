"""SRTP (RFC 3711) AES_CM_128_HMAC_SHA1_80 with SDES keys (RFC 4568) for test peers: protect and unprotect RTP
packets with the keys of an `a=crypto` line, so a raw caller can prove on the wire that a call's media is SRTP
(the payload is not μ-law, it decrypts and authenticates with the key the answer gave) and send SRTP itself.

The venv has no AES (no `cryptography`): the AES-128 blocks come from the `openssl` command (one process per
batch of packets: counter-mode keystream = AES-ECB of the counter blocks). Test use only, never on a call path."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import subprocess
from dataclasses import dataclass, field

SUITE = "AES_CM_128_HMAC_SHA1_80"
TAG_LEN = 10                                     # 80-bit authentication tag
CRYPTO_LINE = re.compile(r"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", re.M)


def aes_ecb(key: bytes, blocks: bytes) -> bytes:
    """AES-128 of each 16-byte block (openssl enc, no padding)."""
    if not blocks:
        return b""
    proc = subprocess.run(["openssl", "enc", "-aes-128-ecb", "-nopad", "-nosalt", "-K", key.hex()],
                          input=blocks, capture_output=True, check=True, timeout=30)
    return proc.stdout


def _counter_blocks(iv: int, count: int) -> bytes:
    return b"".join(((iv + j) % (1 << 128)).to_bytes(16, "big") for j in range(count))


def new_inline_key() -> str:
    """A fresh master key (16 bytes) and salt (14 bytes), base64 as in `inline:`."""
    return base64.b64encode(secrets.token_bytes(30)).decode()


def crypto_attribute(inline: str, tag: int = 1) -> str:
    return f"a=crypto:{tag} {SUITE} inline:{inline}"


def parse_crypto(sdp: str) -> list[tuple[int, str, str]]:
    """(tag, suite, inline key) of each a=crypto line."""
    return [(int(t), suite, key) for t, suite, key in CRYPTO_LINE.findall(sdp)]


@dataclass
class SrtpContext:
    """One direction of one SRTP stream: session keys derived from the master key (KDR 0) and the rollover
    counter per SSRC."""

    inline: str
    enc_key: bytes = b""
    auth_key: bytes = b""
    salt: bytes = b""
    _roc: dict[int, tuple[int, int]] = field(default_factory=dict)     # ssrc -> (roc, last seq)

    def __post_init__(self) -> None:
        master = base64.b64decode(self.inline)
        key, master_salt = master[:16], int.from_bytes(master[16:30], "big")
        # RFC 3711 4.3.1: x = (label || index DIV kdr) XOR master salt, keystream = AES-CM(master key, x * 2^16)
        blocks = b"".join(_counter_blocks((master_salt ^ (label << 48)) << 16, 2) for label in (0, 1, 2))
        out = aes_ecb(key, blocks)
        self.enc_key, self.auth_key, self.salt = out[0:16], out[32:52], out[64:78]

    @staticmethod
    def _header_len(packet: bytes) -> int:
        cc = packet[0] & 0x0F
        length = 12 + 4 * cc
        if packet[0] & 0x10:                                          # header extension
            length += 4 + 4 * struct.unpack("!H", packet[length + 2:length + 4])[0]
        return length

    def _index(self, ssrc: int, seq: int, update: bool) -> int:
        roc, last = self._roc.get(ssrc, (0, seq))
        if seq < last and last - seq > 0x8000:
            roc += 1                                                   # the 16-bit sequence number wrapped
        if update:
            self._roc[ssrc] = (roc, seq)
        return (roc << 16) | seq

    def _keystream(self, items: list[tuple[int, int, int]]) -> list[bytes]:
        """Keystreams for (ssrc, index, length) items, one openssl run for all."""
        salt = int.from_bytes(self.salt, "big") << 16
        counts = [(n + 15) // 16 for _, _, n in items]
        blocks = b"".join(_counter_blocks(salt ^ (ssrc << 64) ^ (index << 16), count)
                          for (ssrc, index, _), count in zip(items, counts, strict=True))
        stream, out, at = aes_ecb(self.enc_key, blocks), [], 0
        for (_, _, n), count in zip(items, counts, strict=True):
            out.append(stream[at:at + n])
            at += 16 * count
        return out

    def _tag(self, authenticated: bytes, roc: int) -> bytes:
        return hmac.new(self.auth_key, authenticated + struct.pack("!I", roc), hashlib.sha1).digest()[:TAG_LEN]

    def protect(self, packets: list[bytes]) -> list[bytes]:
        """RTP packets -> SRTP packets (encrypted payload, tag appended)."""
        items, heads = [], []
        for packet in packets:
            seq, ssrc = struct.unpack("!H", packet[2:4])[0], struct.unpack("!I", packet[8:12])[0]
            heads.append(self._header_len(packet))
            items.append((ssrc, self._index(ssrc, seq, True), len(packet) - heads[-1]))
        out = []
        for packet, head, (_, index, _), ks in zip(packets, heads, items, self._keystream(items), strict=True):
            body = packet[:head] + bytes(a ^ b for a, b in zip(packet[head:], ks, strict=True))
            out.append(body + self._tag(body, index >> 16))
        return out

    def unprotect(self, packets: list[bytes]) -> list[bytes | None]:
        """SRTP packets -> RTP packets, None where the tag does not authenticate."""
        items, heads = [], []
        for packet in packets:
            seq, ssrc = struct.unpack("!H", packet[2:4])[0], struct.unpack("!I", packet[8:12])[0]
            heads.append(self._header_len(packet))
            items.append((ssrc, self._index(ssrc, seq, True), max(0, len(packet) - TAG_LEN - heads[-1])))
        out: list[bytes | None] = []
        for packet, head, (_, index, _), ks in zip(packets, heads, items, self._keystream(items), strict=True):
            body, tag = packet[:-TAG_LEN], packet[-TAG_LEN:]
            if len(packet) < head + TAG_LEN or not hmac.compare_digest(self._tag(body, index >> 16), tag):
                out.append(None)
                continue
            out.append(body[:head] + bytes(a ^ b for a, b in zip(body[head:], ks, strict=True)))
        return out

"""Audio frames moved between the SIP edge and the session: 20 ms of 16-bit little-endian mono PCM."""
from __future__ import annotations

from dataclasses import dataclass

FRAME_MS = 20
SAMPLE_WIDTH_BYTES = 2


def frame_bytes(sample_rate: int) -> int:
    """Bytes in one 20 ms s16le mono frame at `sample_rate`."""
    return sample_rate * FRAME_MS // 1000 * SAMPLE_WIDTH_BYTES


@dataclass(frozen=True, slots=True)
class AudioFrame:
    pcm: bytes            # s16le mono, exactly one frame (FRAME_MS)
    sample_rate: int
    timestamp: float      # monotonic seconds when the frame reached the node (inbound) or was queued (outbound)

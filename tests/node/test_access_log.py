"""The web access log is written in batches (one write per batch, not per request), and nothing is lost."""
from __future__ import annotations

import io
import logging

from veratur.access_log import BatchedLines


class CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_are_written_together_and_all_of_them() -> None:
    stream = CountingStream()
    handler = BatchedLines(stream, interval_s=3600, max_lines=10)
    logger = logging.getLogger("test.access.batched")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for i in range(25):
            logger.info("GET /caso %d", i)
        assert stream.writes == 2 and stream.getvalue().count("\n") == 20    # two full batches of 10
        handler.flush()                                                        # at stop: the 5 kept lines
        assert stream.getvalue().splitlines() == [f"GET /caso {i}" for i in range(25)]
    finally:
        logger.removeHandler(handler)

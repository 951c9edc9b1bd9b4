"""What a child process prints, made safe for the node's log before the supervisor passes it on.

Children echo what the network sent them: Kamailio's core dumps an unparsable datagram whole (`parse_msg:
message=<...>`, over several lines, whatever corelog says), binary included. Such output broke a test harness
reading the log as UTF-8 (the fuzz run) and puts caller numbers into logs. Each line is decoded (undecodable bytes
replaced), control characters replaced, bounded; Kamailio's message dumps and the continuation lines that carry
the rest of a dumped message are withheld with a count of bytes instead, and a phone number (7+ digits) or CURP
in the rest of a Kamailio line, e.g. a header quoted by a parse error, is masked."""
from __future__ import annotations

import re

from foundation.logs import scrub

MAX_LINE_CHARS = 800
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_KAMAILIO_RECORD = re.compile(r"^\s*\d+\(\d+\) [A-Z]+: ")      # " 2(18468) ERROR: <core> ..." (-E, log_stderror)
_DUMP = "message=<"


class OutputFilter:
    """Per child: feed raw lines, get the line to log (bytes, newline-terminated) or None to drop it."""

    def __init__(self, name: str) -> None:
        self.kamailio = name == "kamailio"
        self.in_dump = False
        self.withheld_bytes = 0

    def line(self, raw: bytes) -> bytes | None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if self.kamailio:
            record = _KAMAILIO_RECORD.match(text) is not None
            if self.in_dump and not record:
                self.withheld_bytes += len(raw)             # the rest of a message Kamailio dumped
                self.in_dump = not text.endswith(">")
                return None
            self.in_dump = False
            cut = text.find(_DUMP) if record else -1
            if cut >= 0:
                self.withheld_bytes += len(text) - cut
                self.in_dump = not text.endswith(">")
                text = f"{text[:cut + len(_DUMP)]}... withheld>"
            # the core quotes the header it could not parse ("bad header field [From: <sip:2281234567@...")
            text = scrub(text)
        text = _CONTROL.sub("?", text)
        if len(text) > MAX_LINE_CHARS:
            text = f"{text[:MAX_LINE_CHARS]}... ({len(text) - MAX_LINE_CHARS} more chars cut)"
        return (text + "\n").encode()

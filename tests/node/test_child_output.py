"""The supervisor's filter on child output (veratur.child_output): what Kamailio dumps of a datagram it could not
parse (seen in the SIP fuzz run: binary, caller numbers, over several lines) never reaches the node's log."""
from __future__ import annotations

from veratur.child_output import MAX_LINE_CHARS, OutputFilter

DUMP = (b" 2(18468) ERROR: <core> [core/parser/msg_parser.c:749]: parse_msg(): ERROR: parse_msg: message=<INVITE "
        b"sip:veratur@127.0.0.1 SIP/2.0\r\n")
REST = [b"From: <sip:5512345678@127.0.0.1>;tag=1\r\n", b"\xe3\x80\xff\x00binary\n", b"Content-Length: 0>\n"]
NEXT = b" 1(25404) INFO: <script>: event=call_dispatched dst=sip:127.0.0.1:21689 src=127.0.0.1\n"


def test_a_kamailio_message_dump_is_withheld_and_the_next_record_passes() -> None:
    out = OutputFilter("kamailio")
    lines = [out.line(raw) for raw in [DUMP, *REST, NEXT]]
    assert lines[0] == (b" 2(18468) ERROR: <core> [core/parser/msg_parser.c:749]: parse_msg(): ERROR: parse_msg: "
                        b"message=<... withheld>\n")
    assert lines[1:4] == [None, None, None]
    assert lines[4] == NEXT
    assert out.withheld_bytes > sum(len(r) for r in REST)


def test_a_header_quoted_by_a_kamailio_parse_error_has_its_number_masked() -> None:
    line = OutputFilter("kamailio").line(b" 1(3521) ERROR: <core> [core/parser/msg_parser.c:339]: parse_headers(): "
                                         b"bad header field [From: <sip:2281234567@127.0.0.2>;tag=fz5]\n")
    assert line is not None and b"2281234567" not in line and b"******4567" in line


def test_kamailio_start_up_lines_without_a_dump_are_kept() -> None:
    out = OutputFilter("kamailio")
    assert out.line(b"Listening on \n") == b"Listening on \n"
    assert out.line(b"             udp: 127.0.0.1:5060\n") == b"             udp: 127.0.0.1:5060\n"


def test_any_child_line_is_valid_utf8_without_control_characters_and_bounded() -> None:
    line = OutputFilter("ivr-0").line(b"a\x00b\x1b[31m\xff" + b"x" * 5000 + b"\n")
    assert line is not None
    text = line.decode("utf-8")                        # never raises
    assert "\x00" not in text and "\x1b" not in text and "\ufffd" in text
    assert len(text) < MAX_LINE_CHARS + 60 and text.endswith("more chars cut)\n")

"""Reading the few things the engine needs out of a received SIP request's text (pjsua2 hands us the whole
message as `SipRxData.wholeMsg`): the Request-URI, Call-ID, From/To users and `X-Veratur-*` headers.

pjsip has already parsed and validated the message before we see it; this only extracts values, tolerating
compact header names, folded lines and odd spacing rather than matching whole lines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3261 section 7.3.3 compact forms of the headers we read.
COMPACT_NAMES = {"i": "call-id", "f": "from", "t": "to", "m": "contact", "v": "via", "l": "content-length",
                 "c": "content-type", "k": "supported", "s": "subject"}
PASSED_HEADER_PREFIXES = ("x-veratur-",)
PASSED_HEADERS = ("user-to-user",)
MAX_HEADER_VALUE_CHARS = 512

_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")
_USER_PART = re.compile(r"^(?:sips?|tel):([^@;>?]*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    request_uri: str
    headers: dict[str, str] = field(default_factory=dict)   # lower-case name -> first value
    passed: dict[str, str] = field(default_factory=dict)    # X-Veratur-*/User-to-User, names as received

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def parse_request_head(message: str) -> RequestHead:
    """The request line and headers of a SIP request (the body is ignored)."""
    head = message.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    request_line = lines[0].strip() if lines else ""
    parts = request_line.split()
    method = parts[0] if parts else ""
    request_uri = parts[1] if len(parts) > 1 else ""
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:     # header folding (obsolete but legal)
            unfolded[-1] += " " + line.strip()
        elif line.strip():
            unfolded.append(line)
    headers: dict[str, str] = {}
    passed: dict[str, str] = {}
    for line in unfolded:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        raw_name = name.strip()
        key = COMPACT_NAMES.get(raw_name.lower(), raw_name.lower())
        value = value.strip()[:MAX_HEADER_VALUE_CHARS]
        headers.setdefault(key, value)
        if key.startswith(PASSED_HEADER_PREFIXES) or key in PASSED_HEADERS:
            passed.setdefault(raw_name, value)
    return RequestHead(method=method, request_uri=request_uri, headers=headers, passed=passed)


def uri_user(value: str) -> str:
    """The user part of a URI or of a From/To header value: '"Ana" <sip:2281234567@h>;tag=x' -> '2281234567'."""
    match = _URI_IN_BRACKETS.search(value)
    uri = match.group(1) if match else value.split(";", 1)[0]
    user = _USER_PART.match(uri.strip())
    return user.group(1) if user else ""


def host_of(address: str) -> str:
    """The host of a pjsip 'ip:port' or '[v6]:port' source address."""
    address = address.strip()
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address

"""Pieces filled into the escalation scenarios (tests/escalation/scenarios/*.xml)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent / "scenarios"

PORTAL_BYE = """  <recv request="BYE" timeout="@BYE_TIMEOUT_MS@"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""

_RESPONSE_HEAD = """      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:agentes@[local_ip]:[local_port]>
"""

_SDP = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=agente 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv
"""


def final(code: str) -> str:
    """The agent refuses: `code` (e.g. '486 Busy Here'), then the ACK."""
    return f"""  <send>
    <![CDATA[

      SIP/2.0 {code}
{_RESPONSE_HEAD}      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
"""


RINGING = f"""  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
{_RESPONSE_HEAD}      Content-Length: 0

    ]]>
  </send>
"""

ANSWER_THEN_GET_BYE = RINGING + f"""  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
{_RESPONSE_HEAD}{_SDP}
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <nop><action><exec play_pcap_audio="@TALK_PCAP@"/></action></nop>
  <recv request="BYE" timeout="@BYE_TIMEOUT_MS@"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""

NO_ANSWER = RINGING + """  <recv request="CANCEL" timeout="@BYE_TIMEOUT_MS@"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[

      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$invcseq] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
"""


def refer_block(folio: str, sipfrag: str | None, refer_timeout_ms: int = 40000) -> str:
    """Receive the REFER (checking the case headers), accept it, and report `sipfrag` (None: never report)."""
    text = (HERE / "refer_answer.part.txt").read_text()
    notify = (HERE / "notify.part.txt").read_text().replace("@SIPFRAG@", sipfrag) if sipfrag else ""
    return (text.replace("@NOTIFY@", notify).replace("@FOLIO@", folio)
            .replace("@REFER_TIMEOUT_MS@", str(refer_timeout_ms)))


def play(pcap: Path, after_ms: int) -> str:
    return f"""  <pause milliseconds="{after_ms}"/>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
"""

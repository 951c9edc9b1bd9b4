"""Words every layer shares, so a value written by one package is understood by the others.

The engine, the dialogue, the case record and the web pages all speak of who said a turn, how a call ended, why it
went to an agent and what a prompt expects; each tuple here is the one list of those values.
"""
from __future__ import annotations

from typing import Literal, get_args

Speaker = Literal["caller", "portal", "agent"]
SPEAKERS: tuple[str, ...] = get_args(Speaker)

# How a call ended, as stored in its call record. `lost`: the worker that held it died.
Disposition = Literal["completed", "transferred", "transfer_failed", "abandoned", "error", "lost"]
DISPOSITIONS: tuple[str, ...] = get_args(Disposition)

# Why a call is handed to an agent. A dialogue naming anything else is queued as `caller_request`.
TransferReason = Literal["caller_request", "no_match", "no_input", "verification_locked", "dialogue_error"]
TRANSFER_REASONS: tuple[str, ...] = get_args(TransferReason)
DEFAULT_TRANSFER_REASON: TransferReason = "caller_request"

# What the portal expects after a prompt; it selects the recognizer grammar and the endpointing silence.
ExpectKind = Literal["free", "yes_no", "digits", "menu", "city", "none"]
EXPECT_KINDS: tuple[str, ...] = get_args(ExpectKind)
CLOSED_EXPECT_KINDS: frozenset[str] = frozenset({"yes_no", "digits", "menu", "city"})

DTMF_DIGITS = "0123456789*#ABCD"

# Intents a dialogue answers when it did not understand the caller (counted as a no-match).
NO_MATCH_INTENTS: frozenset[str] = frozenset({"no_match", "nlu_fallback", "out_of_scope"})

# What a call-detail record tallies per call besides its counters: the intents seen, the cities asked (answers
# to a city prompt), and per prompt (dialogue step) how often it was asked, not understood and not answered.
TallyKind = Literal["intent", "city", "asked", "no_match", "no_input"]
TALLY_KINDS: tuple[str, ...] = get_args(TallyKind)

# The channels a citizen reaches a case through (an Interaction's channel). `kiosk`: an enrolled kiosk (/kiosco),
# whose interactions name it as actor `kiosk:<id>`. case_bridge.models.CHANNELS is the same list.
Channel = Literal["phone", "web", "office", "kiosk", "call_center"]
CHANNELS: tuple[str, ...] = get_args(Channel)

"""The citizen record's tables (SQLAlchemy 2, typed).

Only `case_bridge.service` reads and writes these; every other package goes through the service API.
Times are stored timezone-aware and always come back in UTC (SQLite drops the zone, `UtcDateTime` restores it).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

CHANNELS = ("phone", "web", "office", "kiosk", "call_center")
ROLES = ("agent", "clerk", "supervisor", "admin")
DIRECTIONS = ("inbound", "outbound")     # who placed the call: the citizen, or the node (a callback)
STATUSES = ("open", "awaiting_citizen", "in_review", "appointment_scheduled", "resolved", "closed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend (naive values are refused: they are a bug)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Citizen(Base):
    __tablename__ = "citizens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    curp: Mapped[str | None] = mapped_column(String(18), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20), index=True)   # digits only
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    cases: Mapped[list[Case]] = relationship(back_populates="citizen")


class Tramite(Base):
    """A mirror of one entry of the trámite catalog (nlu_data/tramites.yml), refreshed by `db seed`."""

    __tablename__ = "tramites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    agency: Mapped[str] = mapped_column(String(200), default="")
    start_channels: Mapped[list[str]] = mapped_column(default=list)
    finish_channels: Mapped[list[str]] = mapped_column(default=list)
    requirements: Mapped[list[str]] = mapped_column(default=list)
    offices: Mapped[list[str]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    folio: Mapped[str] = mapped_column(String(16), unique=True)
    pin_hash: Mapped[str] = mapped_column(String(200))
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id"), index=True)
    tramite_id: Mapped[str] = mapped_column(ForeignKey("tramites.id"))
    status: Mapped[str] = mapped_column(String(32), default="open")
    created_channel: Mapped[str] = mapped_column(String(16))
    current_channel: Mapped[str] = mapped_column(String(16))
    missing: Mapped[list[str]] = mapped_column(default=list)         # requirement names still owed
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)       # what the citizen supplied, by requirement
    appointment_office: Mapped[str | None] = mapped_column(String(200))
    appointment_at: Mapped[datetime | None] = mapped_column()
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    citizen: Mapped[Citizen | None] = relationship(back_populates="cases")
    tramite: Mapped[Tramite] = relationship()
    history: Mapped[list[CaseStatusChange]] = relationship(order_by="CaseStatusChange.id")
    interactions: Mapped[list[Interaction]] = relationship(order_by="Interaction.started_at")

    # Optimistic locking: every UPDATE says `WHERE version = <read version>`; a concurrent writer makes it
    # match no row, SQLAlchemy raises StaleDataError and the service re-reads and re-applies.
    __mapper_args__ = {"version_id_col": version}


class CaseStatusChange(Base):
    __tablename__ = "case_status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    channel: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CallRecord(Base):
    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), unique=True)
    caller_masked: Mapped[str] = mapped_column(String(32))
    caller_hash: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the digits: match without storing
    called: Mapped[str] = mapped_column(String(64), default="")
    node: Mapped[str] = mapped_column(String(64), default="")
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)   # every dashboard query ranges on it
    answered_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    disposition: Mapped[str | None] = mapped_column(String(32))
    transfer_target: Mapped[str | None] = mapped_column(String(255))
    summary: Mapped[str | None] = mapped_column(Text)
    # The call-detail figures (case_bridge/call_records.py), written by the engine when the call ends.
    worker: Mapped[str] = mapped_column(String(64), default="", server_default="")
    duration_s: Mapped[float | None] = mapped_column(Float)           # answer -> end
    turns_count: Mapped[int] = mapped_column(default=0, server_default="0")   # caller turns
    speech_turns: Mapped[int] = mapped_column(default=0, server_default="0")
    dtmf_turns: Mapped[int] = mapped_column(default=0, server_default="0")
    no_match_count: Mapped[int] = mapped_column(default=0, server_default="0")
    no_input_count: Mapped[int] = mapped_column(default=0, server_default="0")
    barge_ins: Mapped[int] = mapped_column(default=0, server_default="0")
    latency_p50_ms: Mapped[int | None] = mapped_column()
    latency_max_ms: Mapped[int | None] = mapped_column()
    transfer_reason: Mapped[str | None] = mapped_column(String(64))
    # Added by migration 0009: "outbound" for a call the node placed (a callback). The server default keeps rows
    # written before it, and writers that do not know the column, inbound; the dashboard's inbound figures
    # (case_bridge/rollup.py) count only inbound calls.
    direction: Mapped[str] = mapped_column(String(8), default="inbound", server_default="inbound")
    # Added by migration 0011: recognizer overload in this call (ivr.call.overload): hold phrases said, and
    # utterances whose decode was dropped and asked on the keypad. Rows before it read 0.
    asr_holds: Mapped[int] = mapped_column(default=0, server_default="0")
    asr_dropped: Mapped[int] = mapped_column(default=0, server_default="0")

    turns: Mapped[list[TranscriptTurn]] = relationship(order_by="TranscriptTurn.id")

    __table_args__ = (Index("ix_call_records_disposition_started_at", "disposition", "started_at"),
                      # calls still open (the dashboard's in-progress count, the live view): a small partial index
                      Index("ix_call_records_open_started_at", "started_at",
                            sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")))


class CallTally(Base):
    """A per-call count by kind and key (foundation.vocabulary.TALLY_KINDS): intents seen, cities asked, and per
    prompt how often it was asked / not understood / not answered. The dashboard's top-N and lost-caller figures
    are sums over these rows, so they stay cheap without parsing transcripts."""

    __tablename__ = "call_tallies"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("call_records.id"))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(200))
    n: Mapped[int] = mapped_column(default=1)

    __table_args__ = (Index("ix_call_tallies_call_id_kind", "call_id", "kind"),
                      Index("ix_call_tallies_kind_key", "kind", "key"))


class CallRollup(Base):
    """Pre-aggregated dashboard figures per UTC hour of call start, node, kind and key (case_bridge/rollup.py):
    kept in step with every write to a closed call, in the same transaction, and not purged with the calls."""

    __tablename__ = "call_rollup"

    id: Mapped[int] = mapped_column(primary_key=True)
    hour: Mapped[datetime] = mapped_column()
    node: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(200))
    n: Mapped[int] = mapped_column(Integer)
    total: Mapped[float] = mapped_column(Float)     # a sum beside the count (duration s; the peak's epoch s)

    # every dashboard read ranges on (kind, hour) and needs key, n, total: the index covers it, so neither
    # backend visits the table (migration 0007; was (kind, hour) with a table lookup per row)
    __table_args__ = (Index("ux_call_rollup_hour_node_kind_key", "hour", "node", "kind", "key", unique=True),
                      Index("ix_call_rollup_kind_hour_cover", "kind", "hour", "key", "n", "total"))


class RollupVersion(Base):
    """Per UTC hour, a counter raised by every write that changes the dashboard's pre-aggregates of that hour
    (the rollup, a case's journey): the dashboard cache's proof that a period is unchanged."""

    __tablename__ = "rollup_versions"

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class CaseJourney(Base):
    """The cross-channel figure pre-aggregated per case (case_bridge/journeys.py): the case's first phone contact
    ever (channel "phone", gap 0) and, per other channel, its first contact there after that one (an interaction
    or a status change made there) with the seconds between. Recomputed for a case whenever one of its
    interactions or status changes is written, in the same transaction."""

    __tablename__ = "case_journeys"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    first_phone_at: Mapped[datetime] = mapped_column()
    at: Mapped[datetime] = mapped_column()
    gap_s: Mapped[float] = mapped_column(Float)

    # the dashboard reads, per channel, a period of first phone contacts and their gaps: covered
    __table_args__ = (Index("ix_case_journeys_channel_first_phone", "channel", "first_phone_at", "gap_s"),)


class Interaction(Base):
    """One contact of the citizen with the case on one channel (a call, a web visit, an office visit...)."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str | None] = mapped_column(String(100))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("call_records.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # DIRECTIONS: inbound (the citizen came: every channel) | outbound (the node called the citizen: a callback).
    # Migration 0010; kept when retention unlinks the call (call_id NULL), unlike the call record's direction.
    direction: Mapped[str] = mapped_column(String(8), default="inbound", server_default="inbound")

    # the dashboard's cross-channel figure: first phone contact per case, later contacts on other channels
    __table_args__ = (Index("ix_interactions_channel_case_started", "channel", "case_id", "started_at"),
                      Index("ix_interactions_channel_started", "channel", "started_at"))


class TranscriptTurn(Base):
    __tablename__ = "transcript_turns"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("call_records.id"))
    speaker: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(100))
    confidence: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)

    __table_args__ = (Index("ix_transcript_turns_call_id_id", "call_id", "id"),)


class StaffUser(Base):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()


class Escalation(Base):
    """A call handed to the call-center queue: who took it and when (the agent console reads this)."""

    __tablename__ = "escalations"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("call_records.id"), unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    reason: Mapped[str] = mapped_column(String(64), default="")
    target: Mapped[str] = mapped_column(String(255), default="")
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    taken_by: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    taken_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    disposition: Mapped[str | None] = mapped_column(String(32))
    # Added by migration 0002 (case_bridge/escalation.py): how the transfer went and the callback the caller asked.
    mode: Mapped[str] = mapped_column(String(16), default="refer", server_default="refer")
    sip_status: Mapped[int | None] = mapped_column()
    result_at: Mapped[datetime | None] = mapped_column()
    callback_requested: Mapped[bool] = mapped_column(default=False, server_default="0")
    callback_phone: Mapped[str | None] = mapped_column(String(20))   # digits, only when the caller asked for it


class EscalationNote(Base):
    """An agent's note on an escalated call (kept even when the call has no case)."""

    __tablename__ = "escalation_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    escalation_id: Mapped[int] = mapped_column(ForeignKey("escalations.id"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class VerificationAttempt(Base):
    """Failed folio+PIN counters when Redis is unreachable (the in-database fallback of the rate limiter)."""

    __tablename__ = "verification_attempts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()


class NodeSecret(Base):
    """Random keys generated once per deployment (e.g. the key that derives PINs of idempotent opens)."""

    __tablename__ = "node_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


__all__ = [
    "Base", "CHANNELS", "ROLES", "STATUSES", "CallRecord", "CallRollup", "CallTally", "Case", "CaseJourney",
    "CaseStatusChange", "Citizen", "Escalation", "RollupVersion",
    "EscalationNote",
    "Interaction", "NodeSecret", "StaffUser", "Tramite", "TranscriptTurn", "UtcDateTime",
    "VerificationAttempt", "utcnow",
]


CALLBACK_STATES = ("standby", "pending", "active", "done", "failed", "invalid", "opted_out", "cancelled")


class CallbackJob(Base):
    """A call the node owes a citizen (the case's status changed and they accepted a callback). Durable: a restart
    loses nothing; a dialer takes a job by setting `lease_owner`/`lease_until` in one conditional UPDATE, so two
    schedulers never dial the same job (an expired lease is a dialer that died: the job is due again)."""

    __tablename__ = "callback_jobs"
    __table_args__ = (Index("ix_callback_jobs_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    number: Mapped[str] = mapped_column(String(32))          # as normalized for dialling ('' when invalid)
    reason: Mapped[str] = mapped_column(String(64))   # status_changed, clerk_callback, agent_callback, agent_return
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column()
    last_outcome: Mapped[str] = mapped_column(String(32), default="")   # answered, busy, no_answer, silent, ...
    detail: Mapped[str] = mapped_column(String(200), default="")        # why invalid / failed, for the clerk
    sip_call_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by migration 0008: a callback a clerk or an agent scheduled for a time window, with their reason.
    not_after: Mapped[datetime | None] = mapped_column()                 # window end: never dialled after it
    note: Mapped[str] = mapped_column(String(200), default="", server_default="")   # the staff's reason, said
    requested_by: Mapped[str | None] = mapped_column(String(64))         # staff username (None: the citizen)

    case: Mapped[Case] = relationship()


class CallbackAttempt(Base):
    """One dialled attempt of a callback job and how it ended (migration 0009): the dashboard's outbound outcomes
    per period. The job keeps only its last outcome; a job busy twice then answered is three rows here."""

    __tablename__ = "callback_attempts"
    __table_args__ = (Index("ix_callback_attempts_at_outcome", "at", "outcome"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("callback_jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(32))        # callbacks.OUTCOMES
    sip_call_id: Mapped[str | None] = mapped_column(String(200))


class CallbackOptOut(Base):
    """A number that asked not to be called again ("marque 9"); honoured by every channel that queues calls."""

    __tablename__ = "callback_opt_outs"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(16))

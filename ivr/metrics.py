"""Prometheus metrics of an IVR worker, served on its own HTTP port (`metrics.port + 1 + worker index`).

One registry per process, created by the worker and passed down (no module-level mutable state)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

TURN_LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.2, 1.6, 2.5, 5.0)


class OutboxGauges(Protocol):
    """What the outbox gauges read (ivr.call.outbox.Outbox; metrics sits below ivr.call, so not imported)."""
    def __len__(self) -> int: ...
    def oldest_age_s(self) -> float: ...
    def dead_letter_count(self) -> int: ...


class BacklogGauges(Protocol):
    """What the backlog gauges read (ivr.speech.backlog.DecodeBacklog)."""
    @property
    def waiting(self) -> int: ...
    def estimate_wait_s(self) -> float: ...


@dataclass
class EngineMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.calls_active = Gauge("veratur_calls_active", "Calls up on this worker", registry=r)
        self.calls_total = Counter("veratur_calls_total", "Calls answered", ["disposition"], registry=r)
        self.calls_rejected = Counter("veratur_calls_rejected_total", "INVITEs refused", ["code"], registry=r)
        self.turn_latency = Histogram(
            "veratur_turn_latency_seconds", "End of caller speech/DTMF to first reply audio queued",
            buckets=TURN_LATENCY_BUCKETS_S, registry=r)
        self.asr_rtf = Histogram(
            "veratur_asr_real_time_factor", "Decoding time / audio time per decoded chunk",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0), registry=r)
        self.no_match = Counter("veratur_no_match_total", "Caller turns the dialogue did not understand", registry=r)
        self.no_input = Counter("veratur_no_input_total", "Prompts the caller did not answer", registry=r)
        self.barge_ins = Counter("veratur_barge_in_total", "Prompts cut by caller speech", registry=r)
        self.dialogue_fallbacks = Counter(
            "veratur_dialogue_fallback_total", "Turns answered by the fallback menu (Rasa down or slow)", registry=r)
        self.transfers = Counter("veratur_transfers_total", "Transfers to agents", ["result"], registry=r)
        # turn latency counts the filler as the reply (it is what the caller hears), so a slow dialogue shows here
        self.dialogue_fillers = Counter(
            "veratur_dialogue_filler_total", "Turns where the dialogue was slow and 'Un momento' was said first",
            registry=r)
        # overload of the recognizer (ivr.call.overload, ivr.speech.backlog): a late final is never silence
        self.asr_holds = Counter(
            "veratur_asr_hold_total",
            "Utterances whose final was expected or waited past asr.max_wait_ms: 'Un momento, por favor' said",
            registry=r)
        self.asr_finals_dropped = Counter(
            "veratur_asr_final_dropped_total",
            "Utterances whose decode was dropped past asr.max_wait_keypad_ms; the answer was asked on the keypad",
            registry=r)
        self.asr_finals_waiting = Gauge("veratur_asr_finals_waiting",
                                        "Utterances waiting for their final decode in this worker's pool", registry=r)
        self.asr_final_wait_estimate = Gauge(
            "veratur_asr_final_wait_estimate_seconds",
            "Estimated wait for a final asked now (recent decode s x waiting / pool size; the service's if larger)",
            registry=r)
        # the recorder's durable outbox (ivr/call/outbox.py): writes kept on the node while the database is away
        self.outbox_pending = Gauge("veratur_outbox_pending", "Case-bridge writes waiting in the outbox", registry=r)
        self.outbox_oldest_age = Gauge("veratur_outbox_oldest_age_seconds",
                                       "Age of the oldest write waiting in the outbox (0 = empty)", registry=r)
        self.outbox_dead_letters = Gauge("veratur_outbox_dead_letters",
                                         "Outbox writes the case bridge refused for good", registry=r)

    def watch_outbox(self, outbox: OutboxGauges) -> None:
        """Read at each scrape (the outbox is thread-safe; the counts are cheap SQLite reads)."""
        self.outbox_pending.set_function(lambda: len(outbox))
        self.outbox_oldest_age.set_function(outbox.oldest_age_s)
        self.outbox_dead_letters.set_function(outbox.dead_letter_count)

    def watch_backlog(self, backlog: BacklogGauges) -> None:
        """Read at each scrape (ivr.speech.backlog.DecodeBacklog: thread-safe, O(1))."""
        self.asr_finals_waiting.set_function(lambda: backlog.waiting)
        self.asr_final_wait_estimate.set_function(backlog.estimate_wait_s)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

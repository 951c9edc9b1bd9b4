"""`veratur ivr`: one IVR worker process = an asyncio loop + the pjsua2 SIP edge + the call engine.

A node runs several of these behind Kamailio (the PyPI pjsua2 wheel holds at most 4 calls per process).
Worker `--index N` listens on `sip.worker_base_port + N` (or `--port`) and serves Prometheus metrics on
`metrics.port + 1 + N` (or `--metrics-port`). SIGTERM/SIGINT: refuse new calls with 503, let calls end for up to
`sip.shutdown_grace_s`, hang up the rest, destroy the endpoint cleanly.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from foundation.config import Settings
from foundation.logs import kv
from ivr.call.leg import CallLeg
from ivr.metrics import EngineMetrics
from ivr.sip.edge import EdgeConfig, SipEdge, SipError
from ivr.sip.leg import SipLeg

log = logging.getLogger("ivr.worker")

CALL_END_WAIT_S = 3.0          # after the handler returns, wait this long for the BYE to complete
HANDLER_STOP_WAIT_S = 5.0      # at shutdown, after the last BYE, wait this long for handlers to return
DIAL_POLL_S = 2.0              # outbound.enabled: how often due callback jobs are looked for

CallHandler = Callable[[CallLeg], Awaitable[None]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=int, default=0, help="worker index N (port worker_base_port + N)")
    parser.add_argument("--port", type=int, help="SIP port (overrides the index-derived port; 0 = any free port)")
    parser.add_argument("--metrics-port", type=int,
                        help="Prometheus port (default metrics.port + 1 + index; 0 = none)")
    parser.add_argument("--app", default="engine", type=_app_spec,
                        help="call handler: `engine` (ivr.engine), or `package.module:factory` for a handler built "
                             "by factory(settings) (the test suite's SIP-only handler is testkit.demo_handler:factory)")
    parser.add_argument("--pj-log-level", type=int, default=1, help="pjsip log level on stderr (0-6)")


def _app_spec(value: str) -> str:
    if value == "engine" or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected `engine` or `package.module:factory`")


def run(settings: Settings, args: argparse.Namespace) -> int:
    port = args.port if args.port is not None else settings.sip.worker_port(args.index)
    if not settings.sip.use_kamailio and args.port is None:
        port = settings.sip.port
    metrics_port = args.metrics_port if args.metrics_port is not None else settings.metrics.port + 1 + args.index
    worker = Worker(settings, index=args.index, port=port, metrics_port=metrics_port, app=args.app,
                    pj_log_level=args.pj_log_level)
    code = asyncio.run(worker.serve())
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a repeated SIGTERM while the interpreter exits: same end
    return code


class EdgeCollector(Collector):
    """Prometheus view of the SIP edge's state (a snapshot refreshed by the owner thread every 0.5 s)."""

    def __init__(self, edge: SipEdge) -> None:
        self._edge = edge

    def collect(self) -> Iterator[Any]:
        s = self._edge.state
        yield GaugeMetricFamily("veratur_sip_calls", "pjsua calls held (answered, ringing or being refused)",
                                value=s.calls)
        yield GaugeMetricFamily("veratur_sip_legs", "calls with a media leg", value=s.legs)
        yield GaugeMetricFamily("veratur_sip_media_ports", "ports in the conference bridge (null sound = 1)",
                                value=s.media_ports)
        yield GaugeMetricFamily("veratur_sip_ports_pooled", "our media ports (kept for reuse)", value=s.ports_pooled)
        yield GaugeMetricFamily("veratur_sip_ports_in_use", "our media ports attached to a call", value=s.ports_in_use)
        yield GaugeMetricFamily("veratur_sip_draining", "1 while refusing new calls for shutdown",
                                value=int(s.draining))
        frames = CounterMetricFamily("veratur_sip_frames", "20 ms frames moved", labels=["direction"])
        frames.add_metric(["rx"], s.rx_frames)
        frames.add_metric(["tx"], s.tx_frames)
        yield frames
        cost = CounterMetricFamily("veratur_sip_frame_callback_seconds",
                                   "time spent in the per-frame media callbacks", labels=["direction"])
        cost.add_metric(["rx"], s.rx_callback_ns / 1e9)
        cost.add_metric(["tx"], s.tx_callback_ns / 1e9)
        yield cost
        yield CounterMetricFamily("veratur_sip_tx_underruns", "outbound frames sent as silence (nothing queued)",
                                  value=s.tx_underruns)
        yield CounterMetricFamily("veratur_sip_dtmf_digits", "DTMF digits received", value=s.dtmf_digits)
        yield CounterMetricFamily("veratur_sip_legs_seen", "media legs since start", value=s.legs_total)


class Worker:
    """Owns the edge, the handler and one task per call."""

    def __init__(self, settings: Settings, index: int, port: int, metrics_port: int, app: str = "auto",
                 pj_log_level: int = 1) -> None:
        self.settings = settings
        self.index = index
        self.node = f"{settings.node_name}/w{index}"     # veratur.supervisor.worker_node_name: keep them equal
        self.metrics = EngineMetrics()
        self.metrics_port = metrics_port
        config = EdgeConfig.from_settings(settings, port, self.node, index)
        self.edge = SipEdge(dataclasses.replace(config, pj_log_level=pj_log_level),
                            on_call=self._on_call, on_reject=self._on_reject)
        self.app = app
        self._handler: CallHandler | None = None
        self._engine: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._dial_task: asyncio.Task[None] | None = None

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            self._handler = await self._make_handler()
        except Exception as exc:
            log.exception("call handler failed to start")
            print(f"veratur ivr: the call engine failed to start: {exc}", file=sys.stderr)
            return 1
        try:
            await self.edge.start()
        except SipError as exc:
            print(f"veratur ivr: {exc}", file=sys.stderr)
            await self._close_engine()
            return 1
        self.metrics.registry.register(EdgeCollector(self.edge))
        ProcessCollector(registry=self.metrics.registry)
        if self.metrics_port:
            self.metrics.serve(self.metrics_port, addr=self.settings.sip.bind_address)
        uri = self.edge.local_uri()
        print(f"veratur ivr ready {kv(node=self.node, sip=uri, metrics_port=self.metrics_port, app=self.app)}",
              flush=True)
        if self.settings.outbound.enabled:
            self._dial_task = asyncio.create_task(self._dial_loop(), name="callback-dialer")
        await self._stop.wait()
        if self._dial_task is not None:
            self._dial_task.cancel()
        await self._shutdown()
        return 0

    async def _make_handler(self) -> CallHandler:
        if self.app != "engine":
            module_name, _, factory_name = self.app.partition(":")
            factory = getattr(importlib.import_module(module_name), factory_name)
            built: CallHandler = factory(self.settings)
            return built
        from ivr.engine import Engine
        self._engine = await Engine.create(self.settings, self.metrics)
        handler: CallHandler = self._engine.handle_call
        return handler

    async def _dial_loop(self) -> None:
        """Status-change callbacks (outbound.enabled): every DIAL_POLL_S take due jobs within this worker's
        outbound share and call them; the lease keeps other workers and nodes off the same job."""
        from case_bridge.service import CaseService
        from ivr.callback_call import CallbackConversation
        from ivr.dialer import Dialer
        from ivr.speech.tts import EspeakSynthesizer
        s = self.settings
        service = CaseService.from_settings(s)
        tts = EspeakSynthesizer(voice=s.tts.voice, rate=s.tts.rate, sample_rate=s.media.sample_rate,
                                cache_dir=s.path(s.tts.cache_dir))
        await tts.start()
        dialer = Dialer(service, s, self.node, self.edge, CallbackConversation(service, tts, s),
                        capacity=s.sip.max_calls_per_worker,
                        active_calls=lambda: len(self._tasks) + dialer.outbound_active)
        log.info("callback dialer started %s", kv(node=self.node, route=dialer.route or "-"))
        try:
            while not self._stop.is_set():
                try:
                    await dialer.run_once()
                except Exception:
                    log.exception("callback dialer pass failed")
                await asyncio.sleep(DIAL_POLL_S)
        finally:
            for task in list(dialer.tasks):
                task.cancel()
            await tts.close()
            service.close()

    def _on_call(self, leg: SipLeg) -> None:
        self.metrics.calls_active.inc()
        task = asyncio.create_task(self._run_call(leg), name=f"call-{leg.info.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_reject(self, code: int) -> None:
        self.metrics.calls_rejected.labels(code=str(code)).inc()

    async def _run_call(self, leg: SipLeg) -> None:
        assert self._handler is not None
        try:
            await self._handler(leg)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call handler failed %s", kv(call_id=leg.info.call_id))
        finally:
            try:
                if not leg.ended:
                    await leg.hangup()
                    await leg.wait_ended(CALL_END_WAIT_S)
            except Exception:
                log.exception("hangup after handler failed %s", kv(call_id=leg.info.call_id))
            self.metrics.calls_active.dec()
            self.metrics.calls_total.labels(disposition=leg.hangup_reason or "unknown").inc()

    async def _shutdown(self) -> None:
        grace = self.settings.sip.shutdown_grace_s
        log.info("worker stopping %s", kv(node=self.node, calls=len(self._tasks), grace_s=grace))
        self.edge.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Calls still ringing (sip.answer_delay_ms) have no task yet: wait for the edge to be empty too.
        while (self._tasks or self.edge.state.calls) and loop.time() < deadline:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=min(0.2, max(0.0, deadline - loop.time())))
            else:
                await asyncio.sleep(0.1)
        await self.edge.stop(0)                  # BYE to what is left; handlers then see HangupIn("shutdown")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=HANDLER_STOP_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self._close_engine()
        log.info("worker stopped %s", kv(node=self.node))

    async def _close_engine(self) -> None:
        if self._engine is not None:
            try:
                await self._engine.close()
            except Exception:
                log.exception("engine close failed")

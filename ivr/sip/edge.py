"""The SIP edge: a pjsua2 endpoint on its own owner thread, handing answered calls to asyncio as `SipLeg`s.

`ivr.sip` is the only package that imports pjsua2. Rules learnt the hard way (docs/pjsua2.md): one owner thread
makes every pjsua call — the event loop sends it commands (`ivr.sip.owner_thread`); Python references to every
`Call` and port are kept until the call is gone; no exception escapes a callback (`ivr.sip.pj_objects`); calls are
destroyed before `libDestroy()`. Media ports are pooled and reused, never deleted while the endpoint runs
(`ivr.sip.media_port.MediaPortPool`), and disowned after `libDestroy()`.

Policy at the door (`ivr.sip.admission`): an INVITE from outside the allowed peers (behind Kamailio: only the
front doors) gets 403; when the worker holds its maximum or is draining for shutdown, 503 with Retry-After. The
PyPI wheel itself refuses a call beyond its 4 compiled-in slots with a bare 486 before any callback runs; behind
Kamailio that cannot happen (maxload = the slots, and only the front door may call a worker).
An offer with no PCMU/PCMA gets 488 from pjsua (the other codecs are disabled), so does an offer whose media
profile `sip.srtp` refuses (RTP/SAVP when off, one without SDES keys when mandatory). A call with no inbound RTP
for `sip.media_timeout_s` is hung up. OPTIONS is answered by pjsua (Kamailio's probe). RTP reaches a call only
from its signalled addresses (`sip.rtp_sources`, a kernel filter: `ivr.sip.rtp_sources`), so a stranger cannot
take over pjmedia's latching and receive the portal's audio.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pjsua2 as pj

from foundation.config import PJSUA_MAX_CALLS
from foundation.logs import kv, mask_phone
from ivr.call.escalation import refer_to_uri
from ivr.call.leg import CallInfo, TransferResult
from ivr.sip.admission import RETRY_AFTER_S, admit
from ivr.sip.endpoint import EdgeConfig, EdgeState, SipError
from ivr.sip.headers import host_of, parse_request_head, uri_user
from ivr.sip.leg import RX_PUMP_MS, SipLeg
from ivr.sip.media_port import MediaPortPool
from ivr.sip.owner_thread import OwnerThreadCommands
from ivr.sip.pj_objects import PjAccount, PjCall, PjLogWriter, quiet_stdio, sip_header
from ivr.sip.rtp_sources import restrict_media, signalled_hosts, trusted_networks

log = logging.getLogger("ivr.sip.edge")
pjlog = logging.getLogger("ivr.sip.edge.pjsip")

POLL_MS = 5                     # owner thread: SIP event poll slice, also the command latency bound
HOUSEKEEPING_S = 0.5            # media-timeout checks and state snapshot
MAX_MEDIA_PORTS = 4 * PJSUA_MAX_CALLS + 8   # stream + our port per call, bridge slack; 254 default is wasteful
CONNECT_TIMEOUT_S = 32.0        # outbound INVITE without a final answer (Timer B)
HANGUP_WAIT_S = 3.0
SRTP_USE = {"off": pj.PJMEDIA_SRTP_DISABLED, "optional": pj.PJMEDIA_SRTP_OPTIONAL,
            "mandatory": pj.PJMEDIA_SRTP_MANDATORY}
T = TypeVar("T")


class SipEdge:
    """A pjsua2 endpoint run by one owner thread; new inbound legs are handed to `on_call` on the loop."""

    def __init__(self, config: EdgeConfig, on_call: Callable[[SipLeg], None] | None = None,
                 on_reject: Callable[[int], None] | None = None) -> None:
        self.config = config
        self._on_call = on_call
        self._on_reject = on_reject
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._owner = OwnerThreadCommands()
        self._stop_requested = threading.Event()
        self._ready: asyncio.Future[None] | None = None
        self._live_legs: set[SipLeg] = set()           # loop side: legs whose inbound audio the pump drains
        self._pump_task: asyncio.Task[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        # Owner-thread state.
        self._ep: pj.Endpoint | None = None
        self._account: PjAccount | None = None
        # libDestroy() deletes the log writer itself (C++ delete): hand the object over to C++ so Python does
        # not delete it a second time (a double free at exit), and keep the proxy for as long as we live.
        self._log_writer = PjLogWriter()
        self._log_writer.__disown__()
        self._calls: set[PjCall] = set()
        self._reap: list[PjCall] = []
        self._ports = MediaPortPool()
        self._draining = False
        self._rejected: dict[int, int] = {}
        self._ended_totals = EdgeState()               # counters of legs already gone
        self.local_ports: dict[str, int] = {}
        self.state = EdgeState()
        self._bridges: set[asyncio.Task[None]] = set()  # escalation bridges (ivr.sip.bridge), ended at stop()

    # ---- lifecycle (event loop) ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the owner thread and the endpoint; raise SipError if it cannot listen."""
        self._loop = asyncio.get_running_loop()
        self._owner.loop = self._loop
        self._ready = self._loop.create_future()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="pjsua-owner", daemon=True)
        self._thread.start()
        await self._ready
        self._pump_task = asyncio.create_task(self._pump(), name="sip-rx-pump")

    async def _pump(self) -> None:
        """Move inbound frames of every live leg to its session, one wake-up per RX_PUMP_MS for all calls."""
        while True:
            await asyncio.sleep(RX_PUMP_MS / 1000)
            for leg in list(self._live_legs):
                if leg.ended:
                    self._live_legs.discard(leg)
                    continue
                try:
                    leg.pump()
                except Exception:                   # one bad leg must not silence the others
                    log.exception("rx pump failed call_id=%s", leg.info.call_id)
                    self._live_legs.discard(leg)

    def _announce(self, leg: SipLeg) -> None:
        """On the loop: a new inbound leg is answered."""
        self._live_legs.add(leg)
        if self._on_call is not None:
            self._on_call(leg)

    @property
    def uri_host(self) -> str:
        host = self.config.public_address or self.config.bind_address
        return f"[{host}]" if ":" in host else host

    def local_uri(self, transport: str = "udp") -> str:
        port = self.local_ports.get(transport) or next(iter(self.local_ports.values()))
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{self.config.user}@{self.uri_host}:{port}{suffix}"

    def drain(self) -> None:
        """Refuse new calls (503 + Retry-After) from now on; calls up go on."""
        self._owner.post(self._set_draining)

    async def stop(self, grace_s: float = 0.0) -> None:
        """Refuse new calls, let calls end for up to `grace_s`, hang up the rest and destroy the endpoint."""
        if self._thread is None or self._stopped is None:
            return
        if not self._stopped.done():
            self.drain()
            deadline = time.monotonic() + grace_s
            # state is a snapshot the owner thread refreshes every HOUSEKEEPING_S: poll it
            while time.monotonic() < deadline and self.state.calls:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            self._stop_requested.set()
            await asyncio.shield(self._stopped)
        if self._pump_task is not None:
            self._pump_task.cancel()
            self._live_legs.clear()
            for task in list(self._bridges):
                task.cancel()
        self._thread.join(timeout=5)

    async def snapshot(self) -> EdgeState:
        """A fresh EdgeState taken on the owner thread."""
        return await self._submit(self._snapshot)

    # ---- calls (event loop) --------------------------------------------------------------------------
    async def call(self, uri: str, headers: dict[str, str] | None = None,
                   timeout_s: float = CONNECT_TIMEOUT_S) -> SipLeg:
        """Place an outbound call; return its leg once answered (200 OK), or raise SipError with the code."""
        assert self._loop is not None
        future: asyncio.Future[SipLeg] = self._loop.create_future()
        holder: list[PjCall] = []
        await self._submit(lambda: holder.append(self._make_call(uri, headers or {}, future)))
        try:
            leg = await asyncio.wait_for(asyncio.shield(future), timeout_s)
            self._live_legs.add(leg)
            return leg
        except TimeoutError:
            # the CANCEL below fails the future with 487 later: nobody waits for it any more
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            if holder:
                await self._submit(lambda: self._hangup(holder[0], "timeout", 487))
            raise SipError(f"no answer from {uri} in {timeout_s:.0f} s", 408) from None
        except asyncio.CancelledError:
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            if holder:                           # the caller left while the agent rang: CANCEL it
                self._owner.post(lambda: self._hangup(holder[0], "cancelled", 487))
            raise

    async def hangup_leg(self, leg: SipLeg, reason: str) -> None:
        await self._submit(lambda: self._hangup_by_leg(leg, reason))

    async def send_dtmf(self, leg: SipLeg, digits: str) -> None:
        await self._submit(lambda: self._dial_dtmf(leg, digits))

    async def transfer_leg(self, leg: SipLeg, target_uri: str, headers: dict[str, str]) -> TransferResult:
        """REFER the caller to `target_uri` with `headers`; wait for the NOTIFY sipfrag's final code.

        On success our leg is hung up (pjsua does not do it by itself). `escalation.mode: bridge`: the agent is
        called and bridged instead (ivr.sip.bridge); the leg then stays up until either side hangs up."""
        if self.config.escalation_mode == "bridge":
            from ivr.sip.bridge import bridge_transfer
            return await bridge_transfer(self, leg, target_uri, headers, self.config.transfer_timeout_s)
        assert self._loop is not None
        future: asyncio.Future[TransferResult] = self._loop.create_future()
        started = await self._submit(lambda: self._refer(leg, target_uri, headers, future))
        if not started:
            return TransferResult(False, 481, "call not found")
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.config.transfer_timeout_s)
        except TimeoutError:
            result = TransferResult(False, 408, "no final NOTIFY before escalation.transfer_timeout_s")
        log.info("transfer %s", kv(call_id=leg.info.call_id, target=target_uri, ok=result.ok,
                                   code=result.status_code))
        if result.ok:
            await self.hangup_leg(leg, "transferred")
        return result

    # ---- escalation bridge hooks (used by ivr.sip.bridge) ----------------------------------------------
    async def connect_audio(self, a: SipLeg, b: SipLeg) -> bool:
        """Send each answered leg's audio straight to the other in the conference bridge, detaching our ports."""
        return await self._submit(lambda: self._connect_audio(a, b))

    def track_bridge(self, task: asyncio.Task[None]) -> None:
        """Keep a bridge's watcher task until it ends (cancelled at stop)."""
        self._bridges.add(task)
        task.add_done_callback(self._bridges.discard)

    def _connect_audio(self, a: SipLeg, b: SipLeg) -> bool:
        calls = [self._find(a), self._find(b)]
        if any(c is None or c.audio is None for c in calls):
            return False
        first, second = calls
        assert first is not None and second is not None and first.audio is not None and second.audio is not None
        for call in calls:
            assert call is not None and call.audio is not None
            if call.port is not None:
                call.port.stopTransmit(call.audio)
                call.audio.stopTransmit(call.port)
        first.audio.startTransmit(second.audio)
        second.audio.startTransmit(first.audio)
        return True

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._stopped is not None and self._stopped.done():
            raise SipError("SIP edge stopped")
        return await self._owner.submit(fn)

    # ---- owner thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._create_endpoint()
        except Exception as exc:
            log.error("SIP endpoint failed to start: %s", exc)
            self._destroy_endpoint()
            self._owner.resolve(self._ready, error=SipError(f"SIP endpoint failed to start: {exc}"))
            self._owner.resolve(self._stopped)
            return
        self._owner.resolve(self._ready)
        next_housekeeping = 0.0
        assert self._ep is not None
        while not self._stop_requested.is_set():
            try:
                self._ep.libHandleEvents(POLL_MS)
                self._owner.run_pending()
                self._owner.run_due_timers()
                self._reap_calls()
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._check_media_timeouts(now)
                    self.state = self._snapshot()
            except Exception:
                log.exception("SIP owner loop iteration failed")
        self._shutdown()
        self._owner.resolve(self._stopped)

    def _create_endpoint(self) -> None:
        cfg = self.config
        ep = pj.Endpoint()
        self._ep = ep
        with quiet_stdio(cfg.pj_log_level < 3):       # pjlib logs its start-up before logConfig applies
            ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.maxCalls = PJSUA_MAX_CALLS
        ep_cfg.uaConfig.threadCnt = 0               # SIP events only on this thread (libHandleEvents)
        ep_cfg.uaConfig.mainThreadOnly = True
        ep_cfg.uaConfig.userAgent = cfg.user_agent     # product only: no node, worker or version disclosed
        ep_cfg.logConfig.level = cfg.pj_log_level
        ep_cfg.logConfig.consoleLevel = cfg.pj_log_level
        ep_cfg.logConfig.msgLogging = cfg.pj_log_level >= 4
        ep_cfg.logConfig.writer = self._log_writer
        ep_cfg.logConfig.decor = 0
        med = ep_cfg.medConfig
        med.clockRate = cfg.sample_rate
        med.sndClockRate = cfg.sample_rate
        med.channelCount = 1
        med.audioFramePtime = 20
        med.ptime = 20
        med.noVad = True                            # steady 50 packets/s; VAD is ours to do
        med.ecTailLen = 0                           # no echo canceller: there is no loudspeaker
        med.maxMediaPorts = MAX_MEDIA_PORTS
        ep.libInit(ep_cfg)
        for transport in cfg.transports:
            tcfg = pj.TransportConfig()
            # Port 0: the first transport picks a free port, the others try the same number.
            tcfg.port = cfg.port or next(iter(self.local_ports.values()), 0)
            tcfg.boundAddress = cfg.bind_address
            if cfg.public_address:
                tcfg.publicAddress = cfg.public_address
            kind = pj.PJSIP_TRANSPORT_TCP if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
            if ":" in cfg.bind_address:
                kind = pj.PJSIP_TRANSPORT_TCP6 if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP6
            tid = ep.transportCreate(kind, tcfg)
            self.local_ports[transport] = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
        ep.libStart()
        ep.audDevManager().setNullDev()
        self._set_codecs(ep)
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{cfg.user}@{self.uri_host}:{next(iter(self.local_ports.values()))}"
        mtc = acfg.mediaConfig.transportConfig
        mtc.boundAddress = cfg.bind_address
        mtc.port = cfg.rtp_port_start
        mtc.portRange = cfg.rtp_port_range
        mtc.randomizePort = cfg.randomize_rtp_port
        if cfg.public_address:
            mtc.publicAddress = cfg.public_address
        self._set_srtp(acfg.mediaConfig)
        self._account = PjAccount(self)
        self._account.create(acfg, True)
        log.info("SIP edge listening %s", kv(node=cfg.node, address=cfg.bind_address,
                                              **{t: p for t, p in self.local_ports.items()}))

    def _set_srtp(self, media: pj.AccountMediaConfig) -> None:
        """sip.srtp on the account: SDES keys only (no DTLS-SRTP fingerprints in our offers). pjsua answers an
        offer without keys 488 when mandatory, and (srtp off) an RTP/SAVP offer 488 too."""
        media.srtpUse = SRTP_USE[self.config.srtp]
        # pjsua's default (1) answers every call whose INVITE did not come over TLS, plain RTP ones too, with
        # 406 (PJSIP_ESESSIONINSECURE, measured) when SRTP is on: a worker only gets the front door's UDP/TCP relay.
        media.srtpSecureSignaling = self.config.srtp_secure_signaling
        keyings = pj.IntVector()
        keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
        media.srtpOpt.keyings = keyings

    def _set_codecs(self, ep: pj.Endpoint) -> None:
        wanted = [f"{name}/{self.config.sample_rate}" if name in ("PCMU", "PCMA") else name
                  for name in self.config.codecs]
        for codec in ep.codecEnum2():
            cid = codec.codecId
            priority = 0
            for rank, name in enumerate(wanted):
                if cid.upper().startswith(name.upper() + "/") or cid.upper() == name.upper():
                    priority = 255 - rank
            ep.codecSetPriority(cid, priority)

    def _set_draining(self) -> None:
        self._draining = True

    def _snapshot(self) -> EdgeState:
        done = self._ended_totals
        legs = [c.leg for c in self._calls if c.leg is not None]
        state = EdgeState(
            calls=len(self._calls), legs=len(legs), draining=self._draining, rejected=dict(self._rejected),
            media_ports=self._ep.mediaActivePorts() if self._ep is not None else 0,
            ports_pooled=self._ports.created, ports_in_use=self._ports.in_use,
            rx_callback_ns=done.rx_callback_ns, tx_callback_ns=done.tx_callback_ns, rx_frames=done.rx_frames,
            tx_frames=done.tx_frames, tx_underruns=done.tx_underruns, dtmf_digits=done.dtmf_digits,
            legs_total=done.legs_total)
        for leg in legs:
            state.add_leg(leg)
        return state

    # ---- inbound calls (owner thread) ----------------------------------------------------------------
    def on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        call = PjCall(self, account, prm.callId)
        self._calls.add(call)
        head = parse_request_head(prm.rdata.wholeMsg)
        call.sip_call_id = head.get("call-id")
        source = host_of(prm.rdata.srcAddress)
        code, reason = admit(self.config, source, draining=self._draining,
                             active_calls=sum(1 for c in self._calls if c.leg is not None and not c.gone))
        if code:
            op = pj.CallOpParam()
            op.statusCode = code
            op.reason = reason
            if code in (486, 503):
                op.txOption.headers.append(sip_header("Retry-After", str(RETRY_AFTER_S)))
            self._rejected[code] = self._rejected.get(code, 0) + 1
            log.info("INVITE refused %s", kv(call_id=call.sip_call_id, code=code, reason=reason, source=source))
            call.answer(op)
            if self._on_reject is not None:
                self._owner.to_loop(self._on_reject, code)
            return
        info = CallInfo(call_id=call.sip_call_id, caller=uri_user(head.get("from")),
                        called=uri_user(head.request_uri) or uri_user(head.get("to")), node=self.config.node,
                        headers=dict(head.passed))
        assert self._loop is not None
        call.leg = SipLeg(info, self.config.sample_rate, self._loop, self,
                          max_dtmf_per_second=self.config.max_dtmf_per_second)
        log.info("INVITE accepted %s", kv(call_id=info.call_id, caller=mask_phone(info.caller),
                                          called=info.called, source=source))
        # The media state (inside the answer, before the 200 leaves) attaches the RTP source filter with these.
        call.signal_hosts = signalled_hosts(head.get("contact"), source)
        if self.config.answer_delay_ms:
            ringing = pj.CallOpParam()
            ringing.statusCode = 180
            try:
                call.answer(ringing)
            except pj.Error as exc:
                log.info("ringing failed %s", kv(call_id=call.sip_call_id, error=exc.info().strip()[:120]))
                self._hangup(call, "answer_failed", 488)
                return
            self._owner.schedule(self.config.answer_delay_ms / 1000, lambda: self._answer(call))
        else:
            self._answer(call)

    def _answer(self, call: PjCall) -> None:
        if call.gone or call.leg is None:
            return
        op = pj.CallOpParam()
        op.statusCode = 200
        try:
            call.answer(op)
        except pj.Error as exc:            # e.g. the offer's media cannot be set up: pjsua has answered 488
            log.info("answer failed %s", kv(call_id=call.sip_call_id, error=exc.info().strip()[:120]))
            self._hangup(call, "answer_failed", 488)
            return
        call.last_rx_change = time.monotonic()
        call.leg.answered_at = time.monotonic()
        self._owner.to_loop(self._announce, call.leg)

    # ---- outbound calls (owner thread) ---------------------------------------------------------------
    def _make_call(self, uri: str, headers: dict[str, str], future: asyncio.Future[SipLeg]) -> PjCall:
        assert self._account is not None and self._loop is not None
        call = PjCall(self, self._account)
        info = CallInfo(call_id="", caller=self.config.user, called=uri_user(uri), node=self.config.node,
                        headers=dict(headers))
        call.leg = SipLeg(info, self.config.sample_rate, self._loop, self, outbound=True)
        call.connect_future = future
        op = pj.CallOpParam(True)
        for name, value in headers.items():
            op.txOption.headers.append(sip_header(name, value))
        self._calls.add(call)
        try:
            call.makeCall(uri, op)
        except pj.Error as exc:                          # e.g. not a SIP URI, no transport for it
            self._calls.discard(call)
            raise SipError(f"cannot call {uri}: {exc.reason.strip() or exc.info().strip()}", 400) from None
        call.sip_call_id = call.getInfo().callIdString
        call.leg.info = CallInfo(call_id=call.sip_call_id, caller=info.caller, called=info.called,
                                 node=info.node, headers=info.headers)
        return call

    # ---- call events (owner thread) ------------------------------------------------------------------
    def on_call_state(self, call: PjCall) -> None:
        ci = call.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and not call.confirmed:
            call.confirmed = True
            call.last_rx_change = time.monotonic()
            if call.connect_future is not None and call.leg is not None:
                call.leg.answered_at = time.monotonic()
                self._owner.resolve(call.connect_future, call.leg)
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and not call.gone:
            call.gone = True
            code = ci.lastStatusCode
            if call.hangup_reason:
                reason = call.hangup_reason
            elif call.confirmed:
                reason = "bye"
            elif code == 487:
                reason = "cancel"
            else:
                reason = f"failed_{code}"
            if call.connect_future is not None and not call.confirmed:
                self._owner.resolve(call.connect_future, error=SipError(f"call failed: {code} {ci.lastReason}", code))
            if call.transfer_future is not None:
                self._owner.resolve(call.transfer_future, TransferResult(False, 481, "call ended during transfer"))
            if call.leg is not None:
                call.leg.deliver_hangup(reason)
            self._reap.append(call)

    def on_media_state(self, call: PjCall) -> None:
        ci = call.getInfo()
        for media in ci.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if call.leg is None or call.gone:
                return
            now = time.monotonic()
            if media.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD:
                # The caller holds us (a=sendonly or inactive): no RTP need come; the hold timeout applies.
                if call.held_since is None:
                    call.held_since = now
                    log.info("call held %s", kv(call_id=call.sip_call_id))
            elif media.status == pj.PJSUA_CALL_MEDIA_ACTIVE and call.held_since is not None:
                call.held_since = None
                call.last_rx_change = now                # the media timeout counts from the unhold
                log.info("call resumed %s", kv(call_id=call.sip_call_id))
            if media.status not in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                continue
            self._restrict_rtp(call, self._stream_hosts(call, ci, media.index), media.index)
            audio = call.getAudioMedia(media.index)
            if call.port is None:
                call.port = self._ports.acquire(call.leg)
            port_id = audio.getPortId()
            if call.audio is not None and call.media_index == media.index and call.audio_port_id == port_id:
                return                                   # re-INVITE with the same stream: already connected
            # A re-INVITE or UPDATE with a new offer (hold, unhold, a carrier's session refresh with a new SDP
            # version) can make pjsua recreate the stream in a new conference slot: connect our port to it again,
            # or the call stays up with no audio either way.
            call.audio = audio
            call.media_index = media.index
            call.audio_port_id = port_id
            call.leg.media_proto = self._media_proto(call, media.index)
            log.info("media up %s", kv(call_id=call.sip_call_id, proto=call.leg.media_proto))
            audio.startTransmit(call.port)
            call.port.startTransmit(audio)
            return

    @staticmethod
    def _media_proto(call: PjCall, index: int) -> str:
        """The SDP transport of the stream: RTP/SAVP is SRTP (an RTP/AVP answer to a best-effort offer may be too)."""
        try:
            proto = call.getStreamInfo(index).proto
        except pj.Error:
            return ""
        if proto & pj.PJMEDIA_TP_PROFILE_SRTP:
            return "RTP/SAVP"
        return "RTP/AVP" if proto & pj.PJMEDIA_TP_PROFILE_AVP else str(proto)

    def _stream_hosts(self, call: PjCall, ci: pj.CallInfo, index: int) -> set[str]:
        """The hosts the current SDP and Contact name (a re-INVITE may have moved the media elsewhere)."""
        try:
            remote = call.getStreamInfo(index).remoteRtpAddress
        except pj.Error:
            remote = ""
        return signalled_hosts(remote, ci.remoteContact)

    def _restrict_rtp(self, call: PjCall, media_hosts: set[str], index: int = 0) -> None:
        """Let only the call's signalled addresses and sip.rtp_trusted_networks send it RTP (ivr.sip.rtp_sources:
        pjmedia would otherwise send the call's audio to any stranger streaming at its port)."""
        if self.config.rtp_sources != "signalled":
            return
        try:
            local = call.getMedTransportInfo(index).localRtpName
        except pj.Error:
            return                                       # no active media yet (pjsua: med_cnt 0 before the answer)
        networks = trusted_networks(call.signal_hosts | media_hosts, self.config.rtp_trusted_networks)
        # Attached again on every media update (a re-INVITE may have moved the media or renewed the socket);
        # logged when what it lets in changes.
        if restrict_media(call.sip_call_id, local, networks) and call.rtp_filter != (key := (local, tuple(networks))):
            call.rtp_filter = key
            log.info("RTP sources restricted %s", kv(call_id=call.sip_call_id, sources=len(networks)))

    def on_transfer_request(self, call: PjCall, prm: pj.OnCallTransferRequestParam) -> None:
        """A REFER received: the portal never lets a caller make it call a URI (403); a phone follows it with a
        new tracked call (pjsua would otherwise create one no Python object owns)."""
        if not self.config.follow_refer or self._account is None:
            prm.statusCode = 403
            log.info("REFER refused %s", kv(call_id=call.sip_call_id))
            return
        follow = PjCall(self, self._account)
        self._calls.add(follow)
        prm.newCall = follow
        log.info("REFER followed %s", kv(call_id=call.sip_call_id))

    def on_transfer_status(self, call: PjCall, prm: pj.OnCallTransferStatusParam) -> None:
        code = int(prm.statusCode)
        if code < 200 and not prm.finalNotify:
            return                                       # 100 for 202 Accepted, 1xx sipfrags
        prm.cont = False
        future, call.transfer_future = call.transfer_future, None
        self._owner.resolve(future, TransferResult(200 <= code < 300, code, str(prm.reason)))

    def _check_media_timeouts(self, now: float) -> None:
        for call in list(self._calls):
            if not call.confirmed or call.gone or call.media_index < 0:
                continue
            if call.held_since is not None:
                if now - call.held_since > self.config.hold_timeout_s:
                    log.info("held too long %s", kv(call_id=call.sip_call_id, seconds=round(now - call.held_since)))
                    self._hangup(call, "hold_timeout")
                continue
            try:
                packets = call.getStreamStat(call.media_index).rtcp.rxStat.pkt
            except Exception:
                continue
            if packets != call.last_rx_packets:
                call.last_rx_packets = packets
                call.last_rx_change = now
            elif now - call.last_rx_change > self.config.media_timeout_s:
                log.info("no RTP %s", kv(call_id=call.sip_call_id, seconds=round(now - call.last_rx_change, 1)))
                self._hangup(call, "media_timeout")

    def _reap_calls(self) -> None:
        """Drop calls that are gone, outside their own callbacks (deleting a Call inside one is unsafe)."""
        if not self._reap:
            return
        calls, self._reap = self._reap, []
        for call in calls:
            self._release(call)

    def _release(self, call: PjCall) -> None:
        port, call.port = call.port, None
        if port is not None:
            for source, sink in ((port, call.audio), (call.audio, port)):
                if source is not None and sink is not None:
                    try:
                        source.stopTransmit(sink)
                    except Exception:
                        pass                             # the stream is already gone with the call
            self._ports.release(port)
        call.audio = None
        if call in self._calls and call.leg is not None:
            self._ended_totals.add_leg(call.leg)
        self._calls.discard(call)

    # ---- commands (owner thread) ---------------------------------------------------------------------
    def _find(self, leg: SipLeg) -> PjCall | None:
        return next((c for c in self._calls if c.leg is leg and not c.gone), None)

    def _hangup(self, call: PjCall, reason: str, code: int = 0) -> None:
        if call.gone:
            return
        call.hangup_reason = call.hangup_reason or reason
        op = pj.CallOpParam()
        if code:
            op.statusCode = code
        try:
            call.hangup(op)
        except Exception as exc:                          # already disconnecting
            log.debug("hangup failed call_id=%s: %s", call.sip_call_id, exc)

    def _hangup_by_leg(self, leg: SipLeg, reason: str) -> None:
        call = self._find(leg)
        if call is not None:
            self._hangup(call, reason)

    def _dial_dtmf(self, leg: SipLeg, digits: str) -> None:
        call = self._find(leg)
        if call is None:
            raise SipError("call not found", 481)
        call.dialDtmf(digits)

    def _refer(self, leg: SipLeg, uri: str, headers: dict[str, str],
               future: asyncio.Future[TransferResult]) -> bool:
        call = self._find(leg)
        if call is None or not call.confirmed:
            return False
        op = pj.CallOpParam(True)
        for name, value in headers.items():
            op.txOption.headers.append(sip_header(name, value))
        call.transfer_future = future
        # the case headers also go into Refer-To, so the transferee's INVITE to the agent carries them (RFC 7433)
        call.xfer(refer_to_uri(uri, headers) if headers else uri, op)
        return True

    def _shutdown(self) -> None:
        """Hang up what is left, wait briefly for the BYEs to complete, destroy everything, libDestroy.

        Helpers keep every `PjCall` in their own frames: a Call still referenced by a local variable here
        would be freed after libDestroy, and pjsua2's ~Call then asserts and aborts the process."""
        self._hangup_all("shutdown")
        deadline = time.monotonic() + HANGUP_WAIT_S
        while self._ep is not None and self._any_call_up() and time.monotonic() < deadline:
            self._ep.libHandleEvents(POLL_MS)
        self._release_all()
        self._owner.run_pending()                             # answer what was queued (the calls are gone)
        self._owner.clear_timers()
        self._destroy_endpoint()

    def _hangup_all(self, reason: str) -> None:
        for call in list(self._calls):
            self._hangup(call, reason)

    def _any_call_up(self) -> bool:
        return any(not c.gone for c in self._calls)

    def _release_all(self) -> None:
        for call in list(self._calls):
            if not call.gone and call.leg is not None:
                call.leg.deliver_hangup("shutdown")
            self._release(call)
        self._reap.clear()

    def _destroy_endpoint(self) -> None:
        self._calls.clear()
        if self._account is not None:
            try:
                self._account.shutdown()
            except Exception:
                pass
        self._account = None
        gc.collect()                                     # no Call proxy may outlive libDestroy
        if self._ep is not None:
            try:
                self._ep.libDestroy()
            except Exception:
                log.exception("libDestroy failed")
        self._ep = None
        # The conference bridge is gone: deleting a port now would unregister it from a destroyed pjsua (an
        # assertion abort). Leave the C++ ports to the process exit; nothing can call them any more.
        self._ports.abandon_all()
        gc.collect()

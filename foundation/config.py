"""The node's configuration: `config/veratur.yml` validated at start.

A wrong value stops start-up with a message that names the key and the problem (`ConfigError`).
Environment variables `VERATUR__SECTION__KEY=value` override the file (values parsed as YAML scalars).
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from foundation.paths import REPO_ROOT

DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "veratur.yml"
ENV_PREFIX = "VERATUR__"
PJSUA_MAX_CALLS = 4  # compiled into the PyPI pjsua2 wheel; docs/pjsua2.md


class ConfigError(Exception):
    """A configuration problem, with the dotted key that causes it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


REGISTRATION_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


class RegistrationConfig(_Section):
    """One registration of the node at a PBX or SIP trunk (Kamailio's uac module sends the REGISTERs).

    The password is never in this file: `password_env` names an environment variable or `password_file` a file
    (first line) holding it; it is read only when the front door's registration table is written."""

    name: str = Field(pattern=REGISTRATION_NAME)         # our id (logs, metrics, /healthz); also the Contact user
    registrar: str                                        # sip:HOST[:PORT] the REGISTER goes to (its domain)
    user: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    auth_user: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_file: Path | None = None
    realm: str | None = None                              # None: whatever realm the registrar challenges with
    expires: int = Field(300, ge=10, le=86400)
    outbound_proxy: str | None = None                     # sip:HOST[:PORT] to send the REGISTER through
    transport: Literal["udp", "tcp", "tls"] = "udp"           # tls needs sip.tls.enabled (Kamailio's tls module)

    @field_validator("registrar", "outbound_proxy")
    @classmethod
    def _sip_hostport(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.fullmatch(r"sip:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?", value):
            raise ValueError(f"{value!r} is not sip:HOST[:PORT] (no user part, no parameters)")
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> RegistrationConfig:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("set exactly one of password_env and password_file")
        return self

    @property
    def domain(self) -> str:
        """HOST[:PORT] of the registrar (the To/From domain and the REGISTER's Request-URI)."""
        return self.registrar[len("sip:"):]

    def password(self, environ: Mapping[str, str] | None = None) -> str:
        """The secret, read now from the environment or the file; ConfigError naming the source if absent."""
        env = os.environ if environ is None else environ
        if self.password_env is not None:
            value = env.get(self.password_env, "")
            if not value:
                raise ConfigError(f"sip.registrations[{self.name}].password_env: ${self.password_env} is not set")
            return value
        assert self.password_file is not None
        try:
            lines = self.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"sip.registrations[{self.name}].password_file: cannot read: {exc.strerror}") from exc
        if not lines or not lines[0]:
            raise ConfigError(f"sip.registrations[{self.name}].password_file: the first line is empty")
        return lines[0]


class TlsConfig(_Section):
    """SIP over TLS for trunks, terminated by Kamailio's tls module (kamailio-tls-modules): the workers keep UDP/TCP
    on loopback. Off by default. Without certificate/private_key a self-signed pair is made at first start in
    <data_dir>/kamailio/tls/ (fine for a trunk that pins it, not for one that checks a CA)."""

    enabled: bool = False
    port: int = Field(5061, ge=1, le=65535)
    certificate: Path | None = None
    private_key: Path | None = None
    ca_list: Path | None = None                 # CAs of the trunk's certificates (client auth / our outbound)
    require_client_certificate: bool = False    # a trunk that presents one (mutual TLS)
    method: Literal["TLSv1.2+", "TLSv1.3"] = "TLSv1.2+"

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("sip.tls: give both certificate and private_key, or neither (self-signed)")
        if self.require_client_certificate and self.ca_list is None:
            raise ValueError("sip.tls.require_client_certificate needs ca_list (whose certificates to accept)")
        return self


class SipConfig(_Section):
    bind_address: str = "127.0.0.1"
    public_address: str | None = None
    port: int = Field(5060, ge=1, le=65535)
    transports: list[Literal["udp", "tcp"]] = ["udp", "tcp"]
    workers: int = Field(2, ge=1, le=64)
    worker_base_port: int = Field(5070, ge=1, le=65535)
    max_calls_per_worker: int = Field(PJSUA_MAX_CALLS, ge=1, le=PJSUA_MAX_CALLS)
    use_kamailio: bool = True
    new_calls_per_second: int = Field(20, ge=1, le=1000)
    # One source address may use this much of it (a flood from one address leaves the rest to others; a carrier
    # trunk that sends every call from one address needs it raised to new_calls_per_second).
    new_calls_per_source_per_second: int = Field(10, ge=1, le=1000)
    # Calls one source address may hold at once at the front door (0: no cap). Counts answered calls never ACKed
    # too (a scanner's INVITEs held every slot for 32 s). A trunk sending every call from one address: 0.
    max_calls_per_source: int = Field(0, ge=0, le=100000)
    # In-dialog requests (re-INVITE, UPDATE, INFO, ...) from callers, per dialog and per source address and second,
    # relayed by the front door; beyond them 503 + Retry-After (a re-INVITE storm inside one call, issue 13). BYE
    # and ACK always pass. 0: no limit.
    in_dialog_requests_per_second: int = Field(20, ge=0, le=10000)
    in_dialog_requests_per_source_per_second: int = Field(200, ge=0, le=100000)
    # DTMF digits one call hands to the dialogue per second (RFC 4733 or SIP INFO); the rest are dropped. A person
    # keys at most ~12/s (ITU-T Q.24: 40 ms tone + 40 ms pause); a flood of 1000/s must not reach the dialogue.
    max_dtmf_per_second: int = Field(20, ge=1, le=1000)
    allowed_peers: list[str] = ["127.0.0.0/8", "::1/128"]
    rtp_port_start: int = Field(20000, ge=1024, le=65000)
    rtp_port_range: int = Field(2000, ge=10, le=40000)
    # Who may send a call RTP (issue 13, RTP bleed: pjmedia sends the call's audio to wherever RTP comes from, and
    # while the caller is silent one packet from anyone is enough). "signalled": only the call's SDP address, its
    # Contact, the INVITE's source and rtp_trusted_networks (a kernel filter on the media sockets, ivr/sip/
    # rtp_sources.py; a NATed caller whose RTP comes from its SIP address still latches). "any": pjmedia alone.
    rtp_sources: Literal["signalled", "any"] = "signalled"
    # Media gateways whose RTP comes from an address not named in the signalling (IPv4, at most 64).
    rtp_trusted_networks: list[str] = Field(default_factory=list, max_length=64)
    answer_delay_ms: int = Field(0, ge=0, le=10000)        # ring (180) this long before 200 OK
    media_timeout_s: float = Field(30.0, gt=0, le=3600)     # no inbound RTP this long -> BYE
    # The caller put us on hold (re-INVITE a=sendonly/inactive): no RTP is expected, so the media timeout waits;
    # a call held longer than this is hung up (BYE) so a forgotten hold cannot keep a slot forever.
    hold_timeout_s: float = Field(300.0, gt=0, le=7200)
    shutdown_grace_s: float = Field(30.0, ge=0, le=3600)    # SIGTERM: let calls end this long, then BYE
    remote_workers: list[str] = []     # scale-out: "IP:PORT" of workers on other nodes, also behind our Kamailio
    # Behind Kamailio, the only sources a worker takes calls from ([] = bind_address: this node's Kamailio; a
    # worker-only node lists the front node's address). Without Kamailio the worker uses allowed_peers.
    front_doors: list[str] = []
    user_agent: str = Field("Veratur", min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9._-]*$")
    # Registrations at a PBX / trunk, kept by Kamailio's uac module (the front door: survives worker restarts).
    registrations: list[RegistrationConfig] = []
    tls: TlsConfig = TlsConfig()
    # SRTP with SDES keys (RFC 4568) on the workers' calls (issue 16). off: RTP only (an RTP/SAVP offer gets 488);
    # optional: SRTP when the offer carries keys, RTP otherwise; mandatory: an offer without keys gets 488.
    srtp: Literal["off", "optional", "mandatory"] = "off"
    # SDES keys travel in the SDP in clear: over UDP/TCP anyone on the path can read them and decrypt the call.
    # 1: an offer with keys (a=crypto) is taken only when it reached the front door over TLS (sip.tls), else 488;
    # 2: only over TLS to a sips: URI; 0: over any transport (a lab, a trunk that offers SRTP over UDP only).
    # The front door enforces it (Kamailio terminates TLS, the workers see its UDP/TCP relay on loopback).
    srtp_secure_signaling: Literal[0, 1, 2] = 1
    registration_check_s: int = Field(10, ge=1, le=300)    # uac timer: how often expiring ones are refreshed
    registration_retry_s: int = Field(60, ge=5, le=3600)   # a failed registration is retried this long after

    @field_validator("remote_workers")
    @classmethod
    def _ip_ports(cls, value: list[str]) -> list[str]:
        for item in value:
            host, sep, port = item.rpartition(":")
            if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{item!r} is not IP:PORT")
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ValueError(f"{item!r}: {host!r} is not an IP address") from None
        return value

    @field_validator("srtp", mode="before")
    @classmethod
    def _srtp_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false: that is what the operator wrote
        return "off" if value is False else value

    @model_validator(mode="after")
    def _srtp_signaling(self) -> SipConfig:
        if self.srtp == "off" or self.srtp_secure_signaling == 0:
            return self
        level = self.srtp_secure_signaling
        if not (self.tls.enabled and self.use_kamailio):
            raise ValueError(
                f"sip.srtp {self.srtp} with srtp_secure_signaling {level} takes SDES keys only over TLS, and TLS is "
                "the front door's (Kamailio): set sip.tls.enabled and use_kamailio, or srtp_secure_signaling 0 to "
                "take keys over UDP/TCP (readable by anyone on the path)")
        if level == 2 and self.remote_workers:
            raise ValueError("sip.srtp_secure_signaling 2 (end to end) with remote_workers: the front door relays "
                             "the keys to other nodes over plain UDP/TCP; use 1 or keep the workers local")
        return self

    @field_validator("registrations")
    @classmethod
    def _unique_names(cls, value: list[RegistrationConfig]) -> list[RegistrationConfig]:
        names = [r.name for r in value]
        if len(set(names)) != len(names):
            raise ValueError("registration names must be unique")
        return value

    @model_validator(mode="after")
    def _tls_registrations(self) -> SipConfig:
        tls_regs = [r.name for r in self.registrations if r.transport == "tls"]
        if tls_regs and not self.tls.enabled:
            raise ValueError(f"registrations {tls_regs} use transport tls: set sip.tls.enabled (the tls module "
                             "sends them)")
        workers = range(self.worker_base_port, self.worker_base_port + self.workers)
        if self.tls.enabled and (self.tls.port == self.port or self.tls.port in workers):
            raise ValueError(f"sip.tls.port {self.tls.port} is the SIP port or a worker's port")
        return self

    @field_validator("bind_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    @field_validator("allowed_peers", "front_doors")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    @field_validator("rtp_trusted_networks")
    @classmethod
    def _ipv4_networks(cls, value: list[str]) -> list[str]:
        for net in value:
            if not isinstance(ipaddress.ip_network(net, strict=False), ipaddress.IPv4Network):
                raise ValueError(f"{net!r}: the RTP source filter is IPv4 only")
        return value

    @field_validator("transports")
    @classmethod
    def _some_transport(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one transport (udp or tcp)")
        return value

    def worker_port(self, index: int) -> int:
        return self.worker_base_port + index

    def worker_rtp_ports(self, index: int) -> tuple[int, int]:
        """(start, range) of worker `index`'s own slice of the RTP range: workers that share a range all try the
        same first ports and each call's media setup pays a failed bind() first."""
        share = self.rtp_port_range // max(1, self.workers)
        if share < 4 * self.max_calls_per_worker:          # too small to slice (RTP + RTCP per call, spare): share
            return self.rtp_port_start, self.rtp_port_range
        return self.rtp_port_start + (index % self.workers) * share, share


NODE_ROLES = ("all", "front", "media", "dialogue")


class NodeConfig(_Section):
    """Scale-out: what this node runs and who its peers are (docs/scale-out.md).

    all (default): everything on one machine, as before. front: Kamailio and the web app; media nodes register
    their workers with it over Kamailio's RPC (ctl binrpc on TCP `rpc_port`). media: the IVR workers (and the
    node's recognition service); they register with every address in `front_doors`. dialogue: Rasa and the
    action server; media nodes reach it through dialogue.rasa_url."""

    role: Literal["all", "front", "media", "dialogue"] = "all"
    front_doors: list[str] = []        # media: IP of each front node (its Kamailio RPC at rpc_port)
    rpc_port: int = Field(2046, ge=1, le=65535)   # front: where Kamailio's RPC listens on sip.bind_address
    # front, two front doors: the address they share (VRRP/keepalived moves it to the survivor). Kamailio also
    # listens on it (the host needs net.ipv4.ip_nonlocal_bind=1 while the other holds it) and record-routes
    # every call with it, so a call's BYE reaches whichever front door holds it now.
    shared_address: str | None = None
    # media: how often each front door's dispatcher is checked and missing workers (a restarted front door)
    # added again
    register_interval_s: float = Field(5.0, ge=0.5, le=300)
    # `veratur node drain`: the longest a draining media node waits for its calls to end before it stops
    # (what is left then gets sip.shutdown_grace_s more, then a BYE)
    drain_timeout_s: float = Field(600.0, ge=0, le=86400)

    @field_validator("front_doors")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address (a front node's address)") from None
        if len(set(value)) != len(value):
            raise ValueError("front door addresses must be unique")
        return value

    @field_validator("shared_address")
    @classmethod
    def _shared_ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _media_has_front_doors(self) -> NodeConfig:
        if self.role == "media" and not self.front_doors:
            raise ValueError("a media node needs node.front_doors (the front nodes its workers register with)")
        return self


class MediaConfig(_Section):
    sample_rate: Literal[8000, 16000] = 8000
    codecs: list[Literal["PCMU", "PCMA", "G722", "opus"]] = ["PCMU", "PCMA"]


class WhisperAsrConfig(_Section):
    model: str = "whisper-base"                   # placed by `veratur models fetch`, or a CTranslate2 Whisper dir
    beam_size: int = Field(3, ge=1, le=10)
    window: Literal["utterance", "full"] = "utterance"   # utterance: the encoder sees the utterance, not 30 s
    max_decode_s: float = Field(4.0, gt=0, le=60)        # a later result is kept, marked late; no rescoring
    cpu_threads: int = Field(1, ge=1, le=16)             # per decode; decodes run in parallel up to the pool size
    initial_prompt: str | None = None             # off: with a prompt Whisper wrote text on silence and noise


class AsrConfig(_Section):
    # auto: Vosk when `model` is in place, else Whisper when its model is, else keypad only.
    engine: Literal["vosk", "whisper", "auto"] = "auto"
    model: str = "es"
    whisper: WhisperAsrConfig = WhisperAsrConfig()
    # The Spanish model cannot always be fetched (offline install): keypad_only starts the node with speech
    # recognition off (DTMF menus still work) and says so loudly; fail refuses to start.
    on_missing_model: Literal["fail", "keypad_only"] = "keypad_only"
    max_parallel_decoders: int = Field(2, ge=1, le=64)
    vad_energy_threshold_db: float = Field(-40.0, ge=-90.0, le=0.0)
    # silero: a speech detector (Silero VAD, shipped with faster-whisper) decides voiced frames above an energy
    # floor 10 dB under vad_energy_threshold_db; energy: the threshold alone (also the fallback if Silero is absent).
    vad: Literal["energy", "silero"] = "silero"
    vad_speech_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    preroll_ms: int = Field(300, ge=0, le=2000)
    # Overload (ivr.call.session, ivr.speech.backlog): when the wait for an utterance's final, estimated from the
    # decoding backlog at the end of speech or already elapsed, passes max_wait_ms, the caller hears a hold phrase
    # ("Un momento, por favor.") once; past max_wait_keypad_ms that utterance's decode is dropped and the caller is
    # asked for the prompt's answer on the keypad. 0 turns either off.
    max_wait_ms: int = Field(1500, ge=0, le=60000)
    max_wait_keypad_ms: int = Field(5000, ge=0, le=120000)

    @model_validator(mode="after")
    def _wait_bounds(self) -> AsrConfig:
        if self.max_wait_ms and self.max_wait_keypad_ms and self.max_wait_keypad_ms <= self.max_wait_ms:
            raise ValueError(f"asr.max_wait_keypad_ms ({self.max_wait_keypad_ms}) must be above asr.max_wait_ms "
                             f"({self.max_wait_ms}): the hold phrase comes first (or set one of them to 0)")
        return self


class RecognitionServiceConfig(_Section):
    # in_worker: each worker decodes in-process (loads its own model copy). builtin: `veratur up` runs one recognition
    # service per node holding each model once, and the workers stream to it. external: the workers stream to a
    # vosk-server (or another node's service) at `url`, speaking only the base vosk-server protocol.
    mode: Literal["in_worker", "builtin", "external"] = "in_worker"
    url: str = "ws://127.0.0.1:2700"
    threads: int = Field(2, ge=1, le=64)          # decoding pool of the built-in service (one per core)
    max_streams: int = Field(128, ge=1, le=10000)

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("a ws:// or wss:// URL")
        return value


class TtsConfig(_Section):
    voice: str = "roa/es-419"
    rate: int = Field(165, ge=60, le=400)
    cache_dir: Path = Path("var/tts-cache")


class TurnsConfig(_Section):
    no_input_timeout_s: float = Field(7.0, gt=0, le=60)
    max_no_input: int = Field(3, ge=1, le=10)
    max_no_match: int = Field(3, ge=1, le=10)
    endpoint_silence_ms_free: int = Field(900, ge=100, le=5000)
    endpoint_silence_ms_closed: int = Field(450, ge=100, le=5000)
    # a spoken digit string of a stated length (a digits prompt's max_digits: folio 8, PIN 4) that the reading at
    # the closed silence finds short waits this long for its next group (ivr.speech.endpointing); a menu, a one-key
    # prompt or words never wait. At or below endpoint_silence_ms_closed the wait is off.
    endpoint_silence_ms_digits: int = Field(1200, ge=100, le=5000)
    barge_in_min_speech_ms: int = Field(200, ge=0, le=2000)
    dtmf_inter_digit_timeout_s: float = Field(3.0, gt=0, le=30)
    max_call_duration_s: int = Field(900, ge=10, le=86400)


class DenseIntentConfig(_Section):
    """The dense intent service (dialogs/dense, issue 12): Rasa asks it on 127.0.0.1:port where DIET is unsure.
    Off, or its venv missing (.venv-dense, `make setup`): DIET's intents alone, as before."""
    enabled: bool = True
    port: int = Field(5057, ge=1, le=65535)


class DialogueConfig(_Section):
    rasa_url: str = "http://127.0.0.1:5005"
    # More Rasa servers that share this node's Redis tracker and lock store (dialogue nodes, docs/scale-out.md).
    # A call starts on one of them (spread by Call-ID) and moves to the next when its server refuses the connection;
    # the shared tracker store carries the conversation over. Empty: rasa_url alone.
    rasa_failover_urls: list[str] = []
    action_server_port: int = Field(5055, ge=1, le=65535)
    timeout_s: float = Field(2.0, gt=0, le=30)
    # The keypad menu (the dialogue without Rasa, and Rasa's per-turn fallback); unset: dialogs/menu.yml. Relative
    # paths are from the repository root; the file is validated when the engine starts (ivr.dialogue.menu).
    menu_path: Path | None = None
    # Dialogue nodes: the admin node's GET /rasa/model (its web app), fetched at start and every
    # model_sync_interval_s, so every Rasa server runs the model an administrator applied (docs/scale-out.md).
    model_source: str | None = None
    model_sync_interval_s: float = Field(15.0, ge=1, le=3600)
    # Shared secret of the admin node and its dialogue nodes for /rasa/model (env
    # VERATUR__DIALOGUE__MODEL_SHARE_TOKEN); unset: the model is served to loopback callers only.
    model_share_token: str | None = Field(None, min_length=16)
    dense: DenseIntentConfig = DenseIntentConfig()

    @model_validator(mode="after")
    def _dense_port_free(self) -> DialogueConfig:
        rasa_port = urlparse(self.rasa_url).port or 5005
        if self.dense.enabled and self.dense.port in (self.action_server_port, rasa_port):
            raise ValueError(f"dense.port {self.dense.port} is the action server's or Rasa's port")
        return self

    def dense_url(self) -> str | None:
        return f"http://127.0.0.1:{self.dense.port}" if self.dense.enabled else None

    @field_validator("model_source")
    @classmethod
    def _model_source(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None

    @field_validator("rasa_url")
    @classmethod
    def _rasa_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("rasa_failover_urls")
    @classmethod
    def _failover_urls(cls, value: list[str]) -> list[str]:
        urls = [_http_url(url) for url in value]
        if len(set(urls)) != len(urls):
            raise ValueError("lists a server twice")
        return urls

    def rasa_urls(self) -> list[str]:
        """Every Rasa server the engine may use, rasa_url first."""
        return [self.rasa_url, *(url for url in self.rasa_failover_urls if url != self.rasa_url)]


def _http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{value!r} is not an http:// URL with a host")
    return value.rstrip("/")


class DatabaseConfig(_Section):
    url: str = "sqlite:///var/veratur.db"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value


class RedisConfig(_Section):
    url: str = "redis://127.0.0.1:6379/0"


class WebConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    secret_key_file: Path = Path("var/web-secret.key")
    # web processes `veratur up` runs on the one port (SO_REUSEPORT); 0 = one per core the node may use
    processes: int = Field(0, ge=0, le=64)
    # an untouched kiosk screen (/kiosco) is cleared, with its session, after this many seconds
    kiosk_idle_s: int = Field(90, ge=10, le=900)

    def process_count(self) -> int:
        return self.processes or max(1, min(len(os.sched_getaffinity(0)), 8))


class MetricsConfig(_Section):
    port: int = Field(9100, ge=1, le=65535)


class RetentionConfig(_Section):
    """Privacy: call details and transcripts older than this are purged (case_bridge/retention.py), except calls of
    cases still open; the dashboard's hourly rollup is kept."""
    call_records_days: int = Field(365, ge=1, le=3650)
    transcripts_days: int = Field(90, ge=1, le=3650)
    daily_at: str = Field("03:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")   # the supervisor's daily purge, local time

    @model_validator(mode="after")
    def _transcripts_not_longer(self) -> RetentionConfig:
        if self.transcripts_days > self.call_records_days:
            raise ValueError("transcripts_days cannot exceed call_records_days (a purged call takes its turns)")
        return self


class EscalationConfig(_Section):
    mode: Literal["refer", "bridge"] = "refer"
    agent_queue_uri: str = "sip:agentes@127.0.0.1:5090"
    allowed_targets: list[str] = ["sip:agentes@127.0.0.1:5090"]
    transfer_timeout_s: float = Field(15.0, gt=0, le=120)
    # An agent's own phone (staff username -> SIP URI): where an agent's "Llamar de vuelta" bridges or refers the
    # citizen (ivr.agent_callback). Set by the operator, never by a caller; an agent without one cannot use it.
    agent_uris: dict[str, str] = {}

    @model_validator(mode="after")
    def _queue_is_allowed(self) -> EscalationConfig:
        if self.agent_queue_uri not in self.allowed_targets:
            raise ValueError("agent_queue_uri must be one of allowed_targets")
        return self

    @field_validator("agent_uris")
    @classmethod
    def _agent_uris(cls, value: dict[str, str]) -> dict[str, str]:
        for user, uri in value.items():
            if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", user):
                raise ValueError(f"agent_uris: {user!r} is not a staff username")
            # a bare sip:/sips: URI: no display name, <>, embedded headers or whitespace (no header injection)
            if not re.fullmatch(r"sips?:(?:[^@\s<>;?\"]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?"
                                r"(?:;[A-Za-z0-9_.!~*'()%+-]+(?:=[A-Za-z0-9_.!~*'()%+:-]+)?)*", uri, re.IGNORECASE):
                raise ValueError(f"agent_uris[{user}]: {uri[:80]!r} is not a plain SIP URI")
        return value


class CallbackConfig(_Section):
    """Status-change callbacks: the schedule of attempts (busy, no answer and silent answers are retried)."""

    attempts: int = Field(3, ge=1, le=10)
    spacing_s: list[int] = [600, 3600]        # wait after attempt 1, 2, ...; the last value repeats
    quiet_start: str = Field("21:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")   # no calls from here ...
    quiet_end: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")     # ... to here, citizen's local time
    timezone: str = "America/Mexico_City"     # the citizen's local time (one state: one zone)
    lease_s: int = Field(180, ge=10, le=3600)  # a picked job is someone's for this long (a crashed dialer's expires)

    @field_validator("spacing_s")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(v < 1 for v in value):
            raise ValueError("at least one spacing, each >= 1 s")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class OutboundConfig(_Section):
    """Calls the node places (status-change callbacks): through Kamailio, with a caller ID, within a dial plan."""

    enabled: bool = False
    caller_id: str = Field("veratur", pattern=r"^[A-Za-z0-9._+-]{1,32}$")   # user part of the From URI
    caller_name: str = Field("Gobierno del Estado", max_length=64, pattern=r"^[^\"\r\n]*$")
    # Numbers (digits, after normalization) the node may dial must start with one of these; [] = none.
    allowed_prefixes: list[str] = []
    max_share: float = Field(0.25, gt=0, le=1)        # outbound never holds more than this share of the call slots
    pacing_s: int = Field(300, ge=0, le=86400)        # at least this long between two calls to one number
    route: str | None = None                          # sip:HOST:PORT the calls go to (PBX/trunk); None: first registrar
    # How the front door reaches the route: udp | tcp | tls (Kamailio's tls module, its [client:default] profile:
    # the trunk's certificate is checked when sip.tls.ca_list is set). None: the first registration's transport when
    # the route is its registrar, else udp.
    transport: Literal["udp", "tcp", "tls"] | None = None
    callback: CallbackConfig = CallbackConfig()

    @field_validator("allowed_prefixes")
    @classmethod
    def _digits(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not re.fullmatch(r"\d{1,15}", prefix):
                raise ValueError(f"{prefix!r}: a prefix is 1-15 digits")
        return value

    @field_validator("route")
    @classmethod
    def _route(cls, value: str | None) -> str | None:
        return RegistrationConfig._sip_hostport(value)  # type: ignore[operator]


class Settings(_Section):
    node_name: str = "veratur-1"
    data_dir: Path = Path("var")
    node: NodeConfig = NodeConfig()
    sip: SipConfig = SipConfig()
    media: MediaConfig = MediaConfig()
    asr: AsrConfig = AsrConfig()
    recognition_service: RecognitionServiceConfig = RecognitionServiceConfig()
    tts: TtsConfig = TtsConfig()
    turns: TurnsConfig = TurnsConfig()
    dialogue: DialogueConfig = DialogueConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    web: WebConfig = WebConfig()
    metrics: MetricsConfig = MetricsConfig()
    escalation: EscalationConfig = EscalationConfig()
    retention: RetentionConfig = RetentionConfig()
    outbound: OutboundConfig = OutboundConfig()

    @model_validator(mode="after")
    def _front_node_has_kamailio(self) -> Settings:
        if self.node.role == "front" and not self.sip.use_kamailio:
            raise ValueError("node.role front runs Kamailio: sip.use_kamailio must be true")
        return self

    @model_validator(mode="after")
    def _outbound_tls(self) -> Settings:
        if self.outbound.transport != "tls":
            return self
        if not self.sip.tls.enabled:
            raise ValueError("outbound.transport tls: set sip.tls.enabled (Kamailio's tls module places the calls; "
                             "set sip.tls.ca_list to check the trunk's certificate)")
        if not self.sip.use_kamailio:
            raise ValueError("outbound.transport tls: the calls leave through the front door's TLS, so "
                             "sip.use_kamailio must be true (a worker has no TLS of its own)")
        return self

    @property
    def outbound_transport(self) -> str:
        """outbound.transport, or when unset the first registration's transport if the route is its registrar."""
        out, regs = self.outbound, self.sip.registrations
        if out.transport is not None:
            return out.transport
        if regs and (out.route is None or out.route == regs[0].registrar):
            return regs[0].transport
        return "udp"

    def worker_sources(self) -> list[str]:
        """Networks a worker behind Kamailio takes calls from: sip.front_doors, else a media node's front doors,
        else this node's own address (its own Kamailio)."""
        if self.sip.front_doors:
            return list(self.sip.front_doors)
        if self.node.role == "media":
            shared = [self.node.shared_address] if self.node.shared_address else []
            return [f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}" for ip in self.node.front_doors + shared]
        return [self.sip.bind_address]

    def path(self, value: Path | str) -> Path:
        """A configured path, relative ones taken from the repository root."""
        p = Path(value)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path anchored at the repository root."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.path(url[len(prefix):]))
        return url


def _env_value(text: str) -> Any:
    """Numbers, booleans, null and [lists] as YAML would read them; anything else stays the string given."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, list)) or value is None and text else text


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = name[len(ENV_PREFIX):].lower().split("__")
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(keys)} is not a section")
        node[keys[-1]] = _env_value(value)


def load_settings(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read, override from the environment and validate the configuration; raise ConfigError naming the key."""
    path = Path(path or os.environ.get("VERATUR_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    _apply_env(raw, dict(os.environ if environ is None else environ))
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{key}: {err['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from exc

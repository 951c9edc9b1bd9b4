"""Registrations of the node at a PBX or SIP trunk (`sip.registrations`), kept by Kamailio's `uac` module.

Why in the front door and not in a pjsua2 account: the registration is one per node whatever the number of
workers, it survives worker restarts and drains, and calls that arrive through it are dispatched over the workers
like any other call. Kamailio reads the registrations from a db_text `uacreg` table written here (mode 0600: the
password is in it; nothing else on disk or in a log carries it), sends the REGISTERs with digest authentication,
refreshes them before they expire and retries a failed one every `sip.registration_retry_s` (a fixed interval:
one attempt per interval, never a storm). The state is read back over the control socket (`uac.reg_dump`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from foundation.config import RegistrationConfig, Settings
from foundation.logs import kv

log = logging.getLogger("veratur.registrations")
KamcmdRunner = Callable[[str], Awaitable[str]]

# uac_reg.c flag bits as reg_dump shows them.
FLAG_DISABLED = 1 << 0
FLAG_ONGOING = 1 << 1
FLAG_ONLINE = 1 << 2
FLAG_AUTHSENT = 1 << 3
FLAG_INIT = 1 << 4

UACREG_COLUMNS = ("id(int,auto) l_uuid(string) l_username(string) l_domain(string) r_username(string) "
                  "r_domain(string) realm(string,null) auth_username(string) auth_password(string) auth_ha1(string,null) "
                  "auth_proxy(string) expires(int) flags(int) reg_delay(int) contact_addr(string,null) socket(string,null)")
UACREG_VERSION = 5                    # Kamailio 5.6 schema (/usr/share/kamailio/dbtext/kamailio/version)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def contact_hostport(settings: Settings) -> str:
    """Where the registrar sends calls for us: the front door (public address if there is one)."""
    sip = settings.sip
    return f"{_host(sip.public_address or sip.bind_address)}:{sip.port}"


def _escape(value: str) -> str:
    """A db_text field: backslash, colon and line breaks escaped."""
    return (value.replace("\\", "\\\\").replace(":", "\\:").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t"))


def table_row(index: int, reg: RegistrationConfig, settings: Settings, password: str) -> str:
    proxy = reg.outbound_proxy or reg.registrar
    if reg.transport != "udp":
        proxy += f";transport={reg.transport}"
    fields = [str(index + 1), reg.name, reg.name, _host(settings.sip.bind_address), reg.user, reg.domain,
              reg.realm or "", reg.auth_user or reg.user, password, "", proxy, str(reg.expires), "0", "0",
              contact_hostport(settings), ""]
    return ":".join(_escape(f) for f in fields)


def write_table(settings: Settings, db_dir: Path, environ: dict[str, str] | None = None) -> None:
    """The db_text `uacreg` (and `version`) tables for Kamailio; nothing is written without registrations.
    Raises ConfigError when a password source is missing (start-up stops, naming the key)."""
    regs = settings.sip.registrations
    if not regs:
        return
    db_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(db_dir, 0o700)
    rows = [table_row(i, reg, settings, reg.password(environ)) for i, reg in enumerate(regs)]
    _write_private(db_dir / "uacreg", "\n".join([UACREG_COLUMNS, *rows]) + "\n")
    _write_private(db_dir / "version", f"id(int,auto) table_name(string) table_version(int)\n"
                   f"0:uacreg:{UACREG_VERSION}\n")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)


def retry_interval(settings: Settings) -> int:
    """uac's reg_retry_interval giving attempts `sip.registration_retry_s` apart after a failure."""
    return settings.sip.registration_retry_s + settings.sip.registration_check_s + 3


def render_modules(settings: Settings, db_dir: Path, module_dir: str | None = None) -> str:
    """loadmodule/modparam lines of db_text + uac for kamailio.cfg ('' without registrations)."""
    sip = settings.sip
    if not sip.registrations:
        return ""
    return "\n".join([
        'loadmodule "db_text.so"',
        'loadmodule "uac.so"',
        "# uac: registrations at a PBX / trunk (sip.registrations), from the db_text table beside this file.",
        f'modparam("uac", "reg_db_url", "text://{db_dir}")',
        f'modparam("uac", "reg_contact_addr", "{contact_hostport(settings)}")',
        f'modparam("uac", "reg_timer_interval", {sip.registration_check_s})',
        # uac re-sends whatever is due within reg_timer_interval + 3 s: the margin makes registration_retry_s the
        # real spacing of attempts after a failure (measured: retry 5 s with a 2 s timer retried every 2 s).
        f'modparam("uac", "reg_retry_interval", {retry_interval(settings)})',
        'modparam("uac", "reg_keep_callid", 1)',
        'modparam("uac", "reg_random_delay", 0)',
        # Filled by uac_reg_request_to() for outbound calls through the trunk, read by uac_auth() on 401/407.
        'modparam("uac", "auth_username_avp", "$avp(uac_au)")',
        'modparam("uac", "auth_password_avp", "$avp(uac_ap)")',
        'modparam("uac", "auth_realm_avp", "$avp(uac_ar)")',
        'modparam("uac", "restore_mode", "none")       # no From/To rewriting here; AUTO needs rr append_fromtag',
        "",
    ])


@dataclass(frozen=True)
class RegistrationState:
    """One registration as the front door sees it."""

    name: str
    state: str                  # registered | registering | failed | disabled
    flags: int
    expires_in_s: int | None    # seconds left of the current registration (registered only)
    last_change: int            # unix time of the last state change Kamailio recorded (0: never)

    @property
    def up(self) -> bool:
        return self.state == "registered"


def state_of(flags: int) -> str:
    if flags & FLAG_ONLINE:
        return "registered"
    if flags & FLAG_DISABLED:
        return "disabled"
    if flags & (FLAG_ONGOING | FLAG_AUTHSENT):
        return "registering"
    return "failed"


_FIELD = re.compile(r"^\s*([a-z_]+):\s*(.*?)\s*$")


def parse_reg_dump(text: str, now: int) -> list[RegistrationState]:
    """`kamcmd uac.reg_dump` (a list of `{ l_uuid: ... flags: ... }` blocks) -> states, in table order."""
    states: list[RegistrationState] = []
    for block in re.split(r"^\s*\{\s*$", text, flags=re.M)[1:]:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            match = _FIELD.match(line)
            if match:
                fields[match.group(1)] = match.group(2)
        if "l_uuid" not in fields or "flags" not in fields:
            continue
        flags = int(fields["flags"])
        state = state_of(flags)
        timer = int(fields.get("timer_expires", "0") or 0)
        states.append(RegistrationState(
            name=fields["l_uuid"], state=state, flags=flags,
            expires_in_s=max(timer - now, 0) if state == "registered" and timer else None,
            last_change=int(fields.get("reg_init", "0") or 0)))
    return states


_AUTH_FAILED = re.compile(rb"authentication failed for <([a-z0-9_-]+)>")
_REPLY = re.compile(rb"event=registration_reply status=(\d{3}) reason=(.{0,40}?) registrar=(\S+)")


NO_REPLY = "not registered: no reply from the registrar (or no reason given)"


class RegistrationMonitor:
    """What the supervisor knows about the registrations: the front door's `uac.reg_dump`, polled, plus the
    reason of the last failure taken from Kamailio's log lines (which the supervisor pumps anyway). State changes
    are logged once each (never with the user, which may be a phone number); `snapshot()` is what /healthz and
    the start-up screen show."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.configured = {r.name: r for r in settings.sip.registrations}
        self.states: dict[str, RegistrationState] = {}
        self.errors: dict[str, str] = {}
        self.attempts_failed: dict[str, int] = dict.fromkeys(self.configured, 0)

    def _names_for(self, registrar: bytes) -> list[str]:
        address = registrar.decode(errors="replace")
        exact = [n for n, r in self.configured.items() if r.domain == address
                 or (r.outbound_proxy or "").removeprefix("sip:") == address]
        return exact or [n for n in self.configured if not (self.states.get(n) and self.states[n].up)]

    def note_log_line(self, line: bytes) -> None:
        """Feed one line of Kamailio's output: failures are attributed to their registration."""
        if match := _AUTH_FAILED.search(line):
            self._failed([match.group(1).decode()], "authentication failed (wrong user or password)")
        elif match := _REPLY.search(line):
            status, reason = match.group(1).decode(), match.group(2).decode(errors="replace").strip()
            self._failed(self._names_for(match.group(3)), f"registrar answered {status} {reason}".strip())

    def _failed(self, names: list[str], error: str) -> None:
        for name in names:
            if name in self.configured:
                self.attempts_failed[name] += 1
                if self.errors.get(name) != error:
                    log.warning("registration failed %s", kv(event="registration_failed", registration=name,
                                                              error=error))
                self.errors[name] = error

    def update(self, states: list[RegistrationState]) -> None:
        seen = {s.name: s for s in states}
        for name in self.configured:
            new = seen.get(name) or RegistrationState(name, "missing", 0, None, 0)
            old = self.states.get(name)
            if old is None or old.state != new.state:
                level = logging.INFO if new.up else logging.WARNING
                log.log(level, "registration state %s", kv(event="registration_state", registration=name,
                                                           state=new.state, error=self.errors.get(name, "")))
            if new.up:
                self.errors.pop(name, None)
            self.states[name] = new

    async def poll(self, paths_ctl: KamcmdRunner) -> None:
        """One `uac.reg_dump` through the control socket (its text holds the passwords: parsed, never logged)."""
        text = await paths_ctl("uac.reg_dump")
        self.update(parse_reg_dump(text, int(time.time())))

    def snapshot(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, reg in self.configured.items():
            st = self.states.get(name)
            out[name] = {"state": st.state if st else "unknown", "registrar": reg.registrar,
                         "expires_in_s": st.expires_in_s if st else None,
                         "error": self.errors.get(name) or (NO_REPLY if st and st.state == "failed" else None),
                         "failed_attempts": self.attempts_failed[name]}
        return out

    def write(self, path: Path) -> None:
        """The snapshot as JSON for the web app's /healthz (another process), replaced atomically."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"at": int(time.time()), "registrations": self.snapshot()}), encoding="utf-8")
        os.replace(tmp, path)


def state_file(settings: Settings) -> Path:
    return settings.path(settings.data_dir) / "kamailio" / "registrations.json"


def read_state_file(settings: Settings, max_age_s: float) -> dict[str, object] | None:
    """What the supervisor last wrote ({"registrations": {...}}), or None when absent or older than max_age_s
    (the supervisor is gone: the state is unknown, not the last one seen)."""
    try:
        data = json.loads(state_file(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or time.time() - float(data.get("at", 0)) > max_age_s:
        return None
    return data


# ---------------------------------------------------------------------------------------------- outbound relay
OUTBOUND_HEADER = "X-Veratur-Outbound"
# How long the trunk has to answer an outbound INVITE at all (100 Trying), instead of the front door's 1 s for its
# workers on loopback: a trunk across a WAN, over TLS, needs a TCP and a TLS handshake first.
OUTBOUND_FR_TIMER_MS = 4000


def outbound_token_file(settings: Settings) -> Path:
    """The shared secret a worker puts in X-Veratur-Outbound so the front door relays its INVITE to the trunk
    (without it any local process could use the node as a relay to the PSTN). Mode 0600, made once."""
    return settings.path(settings.data_dir) / "kamailio" / "outbound.token"


def ensure_outbound_token(settings: Settings) -> str:
    path = outbound_token_file(settings)
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    _write_private(path, token + "\n")
    return token


def outbound_route_target(settings: Settings) -> str | None:
    out = settings.outbound
    if out.route:
        return out.route.removeprefix("sip:")
    return settings.sip.registrations[0].domain if settings.sip.registrations else None


def render_outbound_check(settings: Settings) -> str:
    """The request_route lines that send a worker's outbound INVITE to route[OUTBOUND] ('' when disabled)."""
    if not settings.outbound.enabled or outbound_route_target(settings) is None:
        return ""
    return (f'    if (is_present_hf("{OUTBOUND_HEADER}")) {{\n'
            "        route(OUTBOUND);\n"
            "    }\n")


def render_outbound_route(settings: Settings, ds_set: int) -> str:
    """route[OUTBOUND]: a worker's INVITE with the right token and a plain number goes to outbound.route."""
    target = outbound_route_target(settings)
    if not settings.outbound.enabled or target is None:
        return ""
    token = ensure_outbound_token(settings)
    transport = settings.outbound_transport
    # tls: t_relay opens (or reuses) a TLS connection through the tls module's [client:default] profile
    uri_transport = "" if transport == "udp" else f";transport={transport}"
    regs = settings.sip.registrations
    via_registrar = bool(regs) and target == regs[0].domain
    # Through the registrar: its credentials (from the uacreg table, never in this file) answer a 401/407.
    # uac_reg_request_to loads them into the auth AVPs (and may rewrite the R-URI's user): the R-URI is set after it.
    auth = f"""
    uac_reg_request_to("{regs[0].name}", 0);""" if via_registrar else ""
    # Over TCP/TLS a trunk that got the INVITE answers 100 at once: a branch that timed out (OUTBOUND_FR_TIMER_MS)
    # with no reply at all means the connection or the TLS handshake failed (a certificate that fails verification under
    # sip.tls.ca_list: Kamailio logs "certificate verify failed"). It is answered 503 with that reason, so the
    # dialer records a failed attempt and why, not a no-answer.
    unreachable = f"""
    if (t_branch_timeout() && !t_branch_replied()) {{
        xlog("L_WARN", "event=outbound_unreachable transport={transport} route={target}\\n");
        t_reply("503", "Trunk not reached over {transport.upper()} (connection, certificate, or no answer in {OUTBOUND_FR_TIMER_MS // 1000} s)");
        exit;
    }}""" if transport != "udp" else ""
    challenge = """
    if (t_check_status("401|407") && uac_auth()) {
        xlog("L_INFO", "event=outbound_authenticated\\n");
        t_relay();
    }""" if via_registrar else ""
    failure = f"""
failure_route[OUTBOUND_FAILURE] {{
    if (t_is_canceled()) {{
        exit;
    }}{unreachable}{challenge}
}}
""" if via_registrar or transport != "udp" else ""
    on_failure = '\n    t_on_failure("OUTBOUND_FAILURE");' if failure else ""
    return failure + f'''
# Outbound calls (callbacks): only from a worker with the node's token, only to a plain number, only to the
# configured route (the PBX/trunk). Everything else is 403/484: the node is no open relay to the PSTN.
route[OUTBOUND] {{
    if ($hdr({OUTBOUND_HEADER}) != "{token}" || !ds_is_from_list("{ds_set}", "3")) {{
        xlog("L_WARN", "event=outbound_refused reason=not_a_worker src=$si\\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    remove_hf("{OUTBOUND_HEADER}");
    if (!($rU =~ "^[0-9]{{7,15}}$")) {{
        xlog("L_WARN", "event=outbound_refused reason=not_a_number src=$si\\n");
        sl_send_reply("484", "Address Incomplete");
        exit;
    }}
    $var(number) = $rU;{auth}
    $ru = "sip:" + $var(number) + "@{target}{uri_transport}";
    xlog("L_INFO", "event=outbound_relayed transport={transport} src=$si\\n");{on_failure}
    t_set_fr(0, {OUTBOUND_FR_TIMER_MS});         # the INVITE's own fr_inv_timer kept (0), fr_timer for a WAN trunk
    record_route();
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
'''

"""A small PBX for tests: a second, real Kamailio as registrar (registrar + usrloc + auth_db over db_text) on
its own ports. Subscribers are given as {user: password}; a call to a registered user is relayed to its Contact
(record-routed, so ACK and BYE stay on the path), a call to anyone else gets 404."""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from testkit.node import stop_group, wait_options
from testkit.ports import HOST
from veratur import kamailio

REALM = "pbx.test"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_db(db_dir: Path, subscribers: dict[str, str]) -> None:
    db_dir.mkdir(parents=True, exist_ok=True)
    rows = [f"{i + 1}:{_escape(user)}:{REALM}:{_escape(pw)}::" for i, (user, pw) in enumerate(subscribers.items())]
    (db_dir / "subscriber").write_text(
        "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null)\n"
        + "".join(r + "\n" for r in rows))
    (db_dir / "version").write_text(
        "id(int,auto) table_name(string) table_version(int)\n0:subscriber:7\n0:location:9\n")
    # usrloc keeps contacts in memory (db_mode 0): a restarted PBX has forgotten every registration.


def render(port: int, db_dir: Path, ctl: Path, min_expires: int = 5, relay_numbers_to: int | None = None,
           tls_cfg: Path | None = None, tls_port: int | None = None) -> str:
    # A trunk's side: INVITEs to a number (not a registered user) must authenticate, then go to the "PSTN" (a
    # sipp phone on relay_numbers_to).
    trunk = "" if relay_numbers_to is None else f"""
        if ($rU =~ "^[0-9]+$") {{
            if (!proxy_authorize("{REALM}", "subscriber")) {{
                xlog("L_NOTICE", "pbx: outbound call challenged from=$si:$sp\\n");
                proxy_challenge("{REALM}", "0");
                exit;
            }}
            consume_credentials();
            xlog("L_NOTICE", "pbx: outbound call authorized user=$au\\n");
            $du = "sip:{HOST}:{relay_numbers_to}";
            record_route();
            t_relay();
            exit;
        }}"""
    return f"""#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:{HOST}:{port}
listen=tcp:{HOST}:{port}
{f"enable_tls=yes{chr(10)}listen=tls:{HOST}:{tls_port}" if tls_cfg else ""}
mpath="{kamailio.find_module_dir()}"
{f'loadmodule "tls.so"{chr(10)}modparam("tls", "config", "{tls_cfg}")' if tls_cfg else ""}
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "db_text.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {min_expires})
modparam("auth_db", "db_url", "text://{db_dir}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
modparam("tm", "fr_timer", 3000)

request_route {{
    if (is_method("REGISTER")) {{
        if (!auth_check("{REALM}", "subscriber", "0")) {{
            xlog("L_NOTICE", "pbx: register challenged or refused user=$fU from=$si:$sp\\n");
            auth_challenge("{REALM}", "0");
            exit;
        }}
        if (!save("location")) {{
            sl_reply_error();
        }}
        xlog("L_NOTICE", "pbx: registered user=$fU contact=$ct\\n");
        exit;
    }}
    if (is_method("OPTIONS") && !has_totag()) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{{trunk}
        if (!lookup("location")) {{
            sl_send_reply("404", "Not Registered");
            exit;
        }}
        xlog("L_NOTICE", "pbx: call to $rU relayed to $ru\\n");
        record_route();
        t_relay();
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


@dataclass
class RunningPbx:
    port: int
    ctl: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def contacts(self) -> str:
        """`ul.dump` of the PBX's location table (who is registered, with which Contact)."""
        return await kamailio.kamcmd(kamailio.KamailioPaths(self.ctl.parent.parent), "ul.dump")


@contextlib.asynccontextmanager
async def run_pbx(root: Path, port: int, subscribers: dict[str, str], name: str = "pbx",
                  relay_numbers_to: int | None = None, tls_port: int | None = None) -> AsyncIterator[RunningPbx]:
    """Start the PBX in its own process group under root/<name>; stopped (SIGTERM) on exit. `tls_port`: also
    a SIP over TLS listener there (Kamailio's tls module, a self-signed certificate of its own)."""
    home = root / name
    run_dir = home / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_db(home / "db", subscribers)
    ctl = run_dir / "kamailio_ctl"
    cfg = home / "pbx.cfg"
    tls_cfg = None
    if tls_port is not None:
        from veratur.kamailio_tls import self_signed
        cert, key = self_signed(home / "tls", HOST)
        tls_cfg = home / "tls" / "tls.cfg"
        tls_cfg.write_text(f"[server:default]\nmethod = TLSv1.2+\ncertificate = {cert}\nprivate_key = {key}\n"
                           "verify_certificate = no\nrequire_certificate = no\n")
    cfg.write_text(render(port, home / "db", ctl, relay_numbers_to=relay_numbers_to, tls_cfg=tls_cfg,
                          tls_port=tls_port))
    log = home / "pbx.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([kamailio.find_binary(), "-DD", "-E", "-f", str(cfg), "-P", str(run_dir / "pid"),  # noqa: ASYNC220
                                 "-Y", str(run_dir), "-m", "32", "-M", "4"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        await wait_options(port)
        yield RunningPbx(port, ctl, log, proc)
    finally:
        stop_group(proc)

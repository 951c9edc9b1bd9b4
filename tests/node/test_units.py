"""Unit tests of the node level without processes: generated Kamailio text, the supervisor's plan."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from foundation.config import load_settings
from testkit.demo_handler import DEMO_APP
from veratur import kamailio, supervisor


def settings(tmp_path: Path, **env: str):
    """Defaults from the schema (not the repository's config file, which others edit) plus `env` overrides."""
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    return load_settings(config, environ={f"VERATUR__{k.upper()}": v for k, v in env.items()} | {
        "VERATUR__DATA_DIR": str(tmp_path)})


def args(**kw: object) -> argparse.Namespace:
    base = {"workers": None, "no_dialogue": True, "no_web": True, "ivr_app": DEMO_APP, "workers_only": False,
            "config": None, "log_level": "INFO"}
    return argparse.Namespace(**(base | kw))


def test_config_carries_the_settings(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__port="5090", sip__new_calls_per_second="7", sip__transports="[udp]",
                 sip__public_address="203.0.113.5", sip__allowed_peers="[10.1.0.0/16, '2001:db8::/32']",
                 turns__max_call_duration_s="600")
    text = kamailio.render_config(s, kamailio.KamailioPaths(tmp_path), module_dir="/mods")
    assert "listen=udp:127.0.0.1:5090 advertise 203.0.113.5:5090" in text
    assert "listen=tcp" not in text and "disable_tcp=yes" in text
    assert 'pl_check("new_invites", "TAILDROP", "7")' in text
    assert 'is_in_subnet("$si", "10.1.0.0/16") || is_in_subnet("$si", "2001:db8::/32")' in text
    assert 'modparam("dispatcher", "ds_hash_expire", 720)' in text          # max call + margin
    assert f'modparam("ctl", "binrpc", "unix:{tmp_path / "run" / "kamailio_ctl"}")' in text
    assert 'mpath="/mods"' in text


def test_dispatcher_list_one_line_per_worker(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__workers="3", sip__worker_base_port="6000", sip__max_calls_per_worker="2")
    lines = kamailio.render_dispatcher_list(s).splitlines()[1:]
    assert lines == [f"1 sip:127.0.0.1:{6000 + i} 0 0 duid=w{i};maxload=2" for i in range(3)]


def test_ipv6_bind_address_is_bracketed(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__bind_address="::1", sip__workers="1")
    assert "1 sip:[::1]:5070 0 0 duid=w0;maxload=4" in kamailio.render_dispatcher_list(s)
    assert "listen=udp:[::1]:5060" in kamailio.render_config(s, kamailio.KamailioPaths(tmp_path), module_dir="/m")


def test_plan_orders_workers_then_kamailio(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__workers="3")
    specs = supervisor.Supervisor(s, args()).plan()
    assert [spec.name for spec in specs] == ["ivr-0", "ivr-1", "ivr-2", "kamailio"]
    assert specs[1].argv[-7:] == ["ivr", "--index", "1", "--port", str(s.sip.worker_port(1)), "--app", DEMO_APP]


def test_plan_without_kamailio_is_one_worker_on_the_front_port(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__use_kamailio="false", sip__workers="3")
    specs = supervisor.Supervisor(s, args()).plan()
    assert [spec.name for spec in specs] == ["ivr-0"]
    assert "--port" in specs[0].argv and str(s.sip.port) in specs[0].argv


def test_plan_runs_web_processes_on_one_port(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__use_kamailio="false", web__processes="3")
    webs = [spec for spec in supervisor.Supervisor(s, args(no_web=False)).plan() if spec.name.startswith("web")]
    assert [spec.name for spec in webs] == ["web", "web-1", "web-2"]
    assert all("--reuse-port" in spec.argv for spec in webs)
    assert [spec.argv[spec.argv.index("--index") + 1] for spec in webs] == ["0", "1", "2"]
    assert ["--no-migrate" in spec.argv for spec in webs] == [False, True, True]   # only the first seeds
    one = settings(tmp_path, sip__use_kamailio="false", web__processes="1")
    (web,) = [spec for spec in supervisor.Supervisor(one, args(no_web=False)).plan() if spec.name.startswith("web")]
    assert "--reuse-port" not in web.argv


def test_workers_only_plan(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__workers="2")
    specs = supervisor.Supervisor(s, args(workers_only=True, no_web=False)).plan()
    assert [spec.name for spec in specs] == ["ivr-0", "ivr-1"]


def test_missing_optional_component_is_skipped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    real = supervisor.importlib.util.find_spec
    monkeypatch.setattr(supervisor.importlib.util, "find_spec",
                        lambda name, *a: None if name == "veratur.webapp" else real(name, *a))
    specs = supervisor.Supervisor(settings(tmp_path), args(no_web=False)).plan()
    assert "web" not in [spec.name for spec in specs]
    assert "event=component_missing child=web module=veratur.webapp" in caplog.text


def test_missing_kamailio_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(kamailio.shutil, "which", lambda *a, **k: None)
    assert supervisor.run(settings(tmp_path), args()) == 2
    assert "kamailio is not installed: install the Debian package `kamailio`" in capsys.readouterr().err


def test_workers_flag_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert supervisor.run(settings(tmp_path), args(workers=0)) == 2
    assert "--workers must be between 1 and 64" in capsys.readouterr().err


async def test_supervisor_migrates_the_database_before_children_start(tmp_path: Path) -> None:
    import sqlalchemy as sa

    s = settings(tmp_path, database__url=f"sqlite:///{tmp_path / 'fresh.db'}")
    await supervisor.Supervisor(s, args())._migrate_database()
    names = sa.inspect(sa.create_engine(s.database_url)).get_table_names()
    assert {"cases", "tramites", "call_records", "transcript_turns"} <= set(names)


async def test_supervisor_goes_on_when_the_database_is_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path, database__url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    await supervisor.Supervisor(s, args())._migrate_database()     # no exception: the node still starts
    assert "database migration failed" in caplog.text and "OperationalError" in caplog.text

"""Scale-out roles without processes: what each role plans to run, the config checks, the front door's RPC listen
line, the worker's accepted sources on a media node, and the dispatcher list parsing membership relies on.
(The roles running for real, in network namespaces: tests/node/test_scaleout_netns.py.)"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from foundation.config import ConfigError, load_settings
from testkit.demo_handler import DEMO_APP
from tests.node.test_units import settings
from veratur import kamailio, supervisor


def args(**kw: object) -> argparse.Namespace:
    base = {"workers": None, "no_dialogue": False, "no_web": False, "ivr_app": DEMO_APP, "workers_only": False,
            "config": None, "log_level": "INFO", "role": None}
    return argparse.Namespace(**(base | kw))


def names(s, **kw: object) -> list[str]:  # type: ignore[no-untyped-def]
    return [spec.name for spec in supervisor.Supervisor(s, args(**kw)).plan() if not spec.name.startswith("web-")]


def test_all_is_the_default_and_plans_everything(tmp_path: Path) -> None:
    s = settings(tmp_path, sip__workers="2")
    assert s.node.role == "all"
    planned = names(s)
    assert {"ivr-0", "ivr-1", "web", "kamailio"} <= set(planned)
    assert "rasa" in planned
    assert not [n for n in names(s, no_dialogue=True) if n in ("rasa", "actions")]


def test_front_role_runs_kamailio_and_web_but_no_workers(tmp_path: Path) -> None:
    s = settings(tmp_path, node__role="front", sip__workers="3")
    planned = names(s)
    assert "kamailio" in planned and "web" in planned
    assert not [n for n in planned if n.startswith("ivr-") or n in ("rasa", "actions")]
    assert kamailio.render_dispatcher_list(s).splitlines()[1:] == []      # media nodes add theirs over RPC
    text = kamailio.render_config(s, kamailio.KamailioPaths(tmp_path), module_dir="/mods")
    assert 'modparam("ctl", "binrpc", "tcp:127.0.0.1:2046")' in text
    assert f'modparam("dispatcher", "reload_delta", {kamailio.RELOAD_DELTA_S})' in text


def test_all_role_keeps_its_rpc_on_the_unix_socket_only(tmp_path: Path) -> None:
    text = kamailio.render_config(settings(tmp_path), kamailio.KamailioPaths(tmp_path), module_dir="/mods")
    assert 'binrpc", "tcp:' not in text


def test_media_role_runs_workers_only_and_takes_calls_from_its_front_doors(tmp_path: Path) -> None:
    s = settings(tmp_path, node__role="media", node__front_doors="[10.9.0.1, 10.9.0.5]", sip__workers="2",
                 sip__bind_address="10.9.0.2")
    assert names(s) == ["ivr-0", "ivr-1"]
    assert s.worker_sources() == ["10.9.0.1/32", "10.9.0.5/32"]
    node = supervisor.Supervisor(s, args())
    assert node.membership is not None
    assert node.membership.targets == ["tcp:10.9.0.1:2046", "tcp:10.9.0.5:2046"]
    assert node.membership.members[1].uri == "sip:10.9.0.2:5071"
    assert node.membership.members[1].attrs == "duid=veratur-1.w1;maxload=4"


def test_dialogue_role_runs_no_sip(tmp_path: Path) -> None:
    planned = names(settings(tmp_path, node__role="dialogue"))
    assert not [n for n in planned if n.startswith("ivr-") or n in ("kamailio", "web")]


def test_role_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.role"):
        settings(tmp_path, node__role="edge")
    with pytest.raises(ConfigError, match="needs node.front_doors"):
        settings(tmp_path, node__role="media")
    with pytest.raises(ConfigError, match=r"node\.front_doors: .*not an IP address"):
        settings(tmp_path, node__role="media", node__front_doors="[front-1]")
    with pytest.raises(ConfigError, match="sip.use_kamailio must be true"):
        settings(tmp_path, node__role="front", sip__use_kamailio="false")


def test_role_from_the_command_line_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert supervisor.run(settings(tmp_path), args(role="media")) == 2
    assert "--role media: " in capsys.readouterr().err


def test_media_duid_is_safe_in_the_attribute_string() -> None:
    assert kamailio.media_duid("site a;b=c", 3) == "site_a_b_c.w3"


def test_dispatcher_list_parsing() -> None:
    text = """{
        NRSETS: 1
        RECORDS: { SET: { ID: 1 TARGETS: {
            DEST: { URI: sip:10.9.0.2:5070 FLAGS: AP PRIORITY: 0 ATTRS: { BODY: duid=m1.w0;maxload=4 DUID: m1.w0
                    MAXLOAD: 4 } RUNTIME: { DLGLOAD: 3 } }
            DEST: { URI: sip:10.9.0.3:5070 FLAGS: DX PRIORITY: 0 ATTRS: { DUID: m2.w0 } RUNTIME: { DLGLOAD: 0 } }
        } } }
    }"""
    assert kamailio.parse_destinations(text) == [
        kamailio.Destination("sip:10.9.0.2:5070", "m1.w0", "AP", 3),
        kamailio.Destination("sip:10.9.0.3:5070", "m2.w0", "DX", 0)]


def test_roles_example_serves_every_host(tmp_path: Path) -> None:
    from foundation.paths import REPO_ROOT
    example = REPO_ROOT / "config" / "examples" / "scaleout-roles.yml"
    front = load_settings(example, environ={})
    media = load_settings(example, environ={"VERATUR__NODE__ROLE": "media", "VERATUR__NODE_NAME": "media-1",
                                            "VERATUR__SIP__BIND_ADDRESS": "10.0.0.21"})
    assert media.worker_sources() == ["10.0.0.11/32"]       # the workers take calls from the front door only
    front = front.model_copy(update={"node": front.node.model_copy(update={"role": "front"}),
                                     "data_dir": tmp_path})
    assert 'binrpc", "tcp:10.0.0.11:2046"' in kamailio.render_config(front, kamailio.KamailioPaths(tmp_path),
                                                                     module_dir="/mods")
    assert names(media) == [f"ivr-{i}" for i in range(4)]


async def test_shared_front_door_address_is_listened_on_and_record_routed(tmp_path: Path) -> None:
    s = settings(tmp_path, node__role="front", node__shared_address="127.0.0.77", sip__transports="[udp, tcp]")
    paths = kamailio.write_config(s)
    await kamailio.check_config(paths)            # kamailio -c accepts it (listening on an address not yet held)
    text = paths.cfg.read_text()
    assert "listen=udp:127.0.0.77:5060" in text and "listen=tcp:127.0.0.77:5060" in text
    assert 'record_route_preset("127.0.0.77:5060;transport=tcp")' in text
    assert 'record_route_preset("127.0.0.77:5060")' in text
    media = settings(tmp_path, node__role="media", node__front_doors="[10.9.0.1]", node__shared_address="10.9.0.100")
    assert media.worker_sources() == ["10.9.0.1/32", "10.9.0.100/32"]


def test_the_dense_intent_service_runs_beside_rasa_unless_disabled(tmp_path: Path) -> None:
    from veratur import dense_server
    assert ("dense" in names(settings(tmp_path))) == dense_server.available()   # .venv-dense from `make setup`
    assert "dense" not in names(settings(tmp_path), no_dialogue=True)
    assert "dense" not in names(settings(tmp_path, dialogue__dense__enabled="false"))
    assert "dense" not in names(settings(tmp_path, node__role="front"))

"""The example configurations in config/examples/ load, and what they generate is accepted by the real tools."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from foundation.config import load_settings
from foundation.paths import REPO_ROOT
from veratur import kamailio

EXAMPLES = REPO_ROOT / "config" / "examples"


async def test_scaleout_example_front_node(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLES / "scaleout.yml", environ={})
    assert settings.sip.use_kamailio and settings.sip.workers == 4
    assert settings.database.url.startswith("postgresql+psycopg://")
    dispatcher = kamailio.render_dispatcher_list(settings).splitlines()[1:]
    assert dispatcher == [f"1 sip:10.0.0.11:{5070 + i} 0 0 duid=w{i};maxload=4" for i in range(4)] + [
        f"1 sip:10.0.0.12:{5070 + i} 0 0 duid=r{i};maxload=4" for i in range(4)]
    paths = kamailio.write_config(settings.model_copy(update={"data_dir": tmp_path}))
    await kamailio.check_config(paths)          # kamailio -c accepts the generated file
    cfg = paths.cfg.read_text()
    assert "listen=udp:10.0.0.11:5060" in cfg and "listen=tcp:10.0.0.11:5060" in cfg
    assert 'is_in_subnet("$si", "192.0.2.10/32")' in cfg


def test_scaleout_example_worker_node_from_environment() -> None:
    settings = load_settings(EXAMPLES / "scaleout.yml", environ={
        "VERATUR__NODE_NAME": "veratur-2", "VERATUR__SIP__BIND_ADDRESS": "10.0.0.12"})
    assert settings.node_name == "veratur-2"
    assert [settings.sip.worker_port(i) for i in range(settings.sip.workers)] == [5070, 5071, 5072, 5073]
    remote = {w.rpartition(":")[0] for w in settings.sip.remote_workers}
    assert remote == {settings.sip.bind_address}


def test_postgres_example_loads() -> None:
    settings = load_settings(EXAMPLES / "postgres.yml", environ={})
    url = make_url(settings.database_url)
    assert (url.drivername, url.host, url.port, url.database) == ("postgresql+psycopg", "127.0.0.1", 5432, "veratur")
    assert settings.sip.use_kamailio                      # everything else keeps its default


@pytest.mark.postgres
def test_postgres_example_url_reaches_the_server() -> None:
    """The example's driver, host and credentials work (against the server's own `postgres` database, since
    creating `veratur` is the operator's step)."""
    url = make_url(load_settings(EXAMPLES / "postgres.yml", environ={}).database_url).set(database="postgres")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
    finally:
        engine.dispose()


def test_remote_workers_must_be_ip_and_port() -> None:
    from foundation.config import ConfigError
    with pytest.raises(ConfigError, match=r"sip\.remote_workers: .*not IP:PORT"):
        load_settings(EXAMPLES / "postgres.yml", environ={"VERATUR__SIP__REMOTE_WORKERS": "[node-b]"})
    with pytest.raises(ConfigError, match=r"sip\.remote_workers: .*is not an IP address"):
        load_settings(EXAMPLES / "postgres.yml", environ={"VERATUR__SIP__REMOTE_WORKERS": "[node-b:5070]"})

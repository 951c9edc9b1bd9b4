from pathlib import Path

import pytest

from foundation.config import ConfigError, load_settings


def test_default_config_validates() -> None:
    settings = load_settings()
    assert settings.sip.max_calls_per_worker == 4
    assert settings.database_url.startswith("sqlite:////")


def test_env_overrides_a_key() -> None:
    settings = load_settings(environ={"VERATUR__SIP__WORKERS": "5", "VERATUR__DATABASE__URL": "sqlite:///:memory:"})
    assert settings.sip.workers == 5
    assert settings.database_url == "sqlite:///:memory:"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("sip:\n  port: 70000\n", "sip.port"),
        ("sip:\n  max_calls_per_worker: 8\n", "sip.max_calls_per_worker"),
        ("sip:\n  bind_address: not-an-ip\n", "sip.bind_address"),
        ("media:\n  sample_rate: 11025\n", "media.sample_rate"),
        ("sip:\n  prot: 5060\n", "sip.prot"),
        ("database:\n  url: mysql://x\n", "database.url"),
        ("escalation:\n  agent_queue_uri: sip:evil@1.2.3.4\n", "escalation"),
        ("dialogue:\n  dense:\n    port: 0\n", "dialogue.dense.port"),
        ("dialogue:\n  action_server_port: 5057\n", "dense.port 5057"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "v.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert key in str(err.value)


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "v.yml"
    path.write_text("sip:\n  port: [5060\n")
    with pytest.raises(ConfigError, match=r"v.yml:\d+:\d+"):
        load_settings(path, environ={})

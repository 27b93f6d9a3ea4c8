"""config.toml documents the defaults; overrides come from the environment and --set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_config_is_exactly_the_built_in_defaults() -> None:
    shipped = load_settings(REPO / "config.toml", environ={})
    defaults = load_settings(None, environ={})
    assert dataclasses.replace(shipped, base_dir=defaults.base_dir) == defaults


def test_environment_and_cli_overrides_in_that_order() -> None:
    settings = load_settings(None, {"smtp.port": "2600"},
                             environ={"LERS_SMTP__PORT": "2500", "LERS_TELEGRAM__ALLOWED_CHATS": "-1, -2"})
    assert settings.smtp.port == 2600
    assert settings.telegram.allowed_chats == (-1, -2)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"review.four_eyes_types": "subpoena,wiretap"},
     "review.four_eyes_types: 'wiretap' is not a request type"),
    ({"telegram.enabled": "true"}, "telegram.token: required when telegram.enabled is true"),
    ({"telegram.allowed_chats": "ops"}, "telegram.allowed_chats: must be a list of whole numbers"),
    ({"storage.url": "mysql://x"}, "storage.url: must start with sqlite+aiosqlite://"),
    ({"worker.gpg_threads": "0"}, "worker.gpg_threads: must be greater than 0"),
    ({"policy.allow_inline_pgp": "maybe"}, "policy.allow_inline_pgp: must be true or false"),
    ({"health.listen": "0.0.0.0:9425"}, "health.listen: 0.0.0.0 is not a loopback address"),
    ({"health.listen": "[2001:db8::1]:9425"}, "health.listen: 2001:db8::1 is not a loopback address"),
    ({"health.listen": "9425"}, "health.listen: must be HOST:PORT"),
    ({"health.listen": "metrics.internal:9425"}, "health.listen: 'metrics.internal' is not an IP"),
])
def test_bad_values_are_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        load_settings(None, overrides, environ={})


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("123:abc\n")
    (tmp_path / "config.toml").write_text('[telegram]\nenabled = true\ntoken_file = "token"\n')
    settings = load_settings(tmp_path / "config.toml", environ={})
    assert settings.telegram_token() == "123:abc"


def test_the_health_endpoint_opens_beyond_loopback_only_when_asked() -> None:
    settings = load_settings(None, {"health.listen": "0.0.0.0:9425", "health.allow_non_loopback": "true"},
                             environ={})
    assert settings.health.host_port == ("0.0.0.0", 9425)
    assert load_settings(None, {"health.listen": "[::1]:9425"}, environ={}).health.host_port == ("::1", 9425)

"""One configuration: flags, BREWMESH_* variables and a TOML file, in that order; `config show`.

Each case runs the real `brewmesh` command, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from brewmesh import settings
from tests.conftest import BIN, ROOT

README = (ROOT / "README.md").read_text()


def brewmesh(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BREWMESH_")}
    return subprocess.run(
        [str(BIN / "brewmesh"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def shown(*args: str, **env: str) -> dict[str, object]:
    done = brewmesh("config", "show", "--json", *args, **env)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    config = tmp_path / "brewmesh.toml"
    config.write_text('port = 7001\nlog_level = "DEBUG"\nlog_format = "json"\n')
    assert shown("--config", str(config))["port"] == 7001
    assert shown("--config", str(config), BREWMESH_PORT="7002")["port"] == 7002
    effective = shown("--config", str(config), "--port", "7003", BREWMESH_PORT="7002")
    assert (effective["port"], effective["log_level"], effective["log_format"]) == (7003, "DEBUG", "json")


def test_defaults_are_the_commands_own() -> None:
    assert shown()["port"] == 50051
    assert shown("--for", "serve")["port"] == 0


def test_secrets_are_masked_and_urls_lose_their_password() -> None:
    effective = shown(
        BREWMESH_ADMIN_KEY="bmk_very-secret", BREWMESH_STORE="postgresql://app:hunter2@db:5432/brewmesh"
    )
    text = json.dumps(effective)
    assert effective["admin_key"] == settings.MASK
    assert "hunter2" not in text and "very-secret" not in text
    assert effective["store"] == "postgresql://app:***@db:5432/brewmesh"


@pytest.mark.parametrize(
    ("args", "env", "blamed"),
    [
        (["--port", "70000"], {}, "--port ($BREWMESH_PORT)"),
        ([], {"BREWMESH_LOG_LEVEL": "LOUD"}, "--log-level ($BREWMESH_LOG_LEVEL)"),
        (
            [],
            {"BREWMESH_EVENT_MAX_DELIVERIES": "many"},
            "--event-max-deliveries ($BREWMESH_EVENT_MAX_DELIVERIES)",
        ),
        (["--bus", "redis://127.0.0.1:6379/0?protocol=3"], {}, "--bus ($BREWMESH_BUS)"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(args: list[str], env: dict[str, str], blamed: str) -> None:
    done = brewmesh("config", "show", *args, **env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert blamed in done.stderr


def test_a_bus_url_may_leave_the_protocol_out_or_ask_for_resp2() -> None:
    for url in ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0?protocol=2"):
        done = brewmesh("config", "show", "--bus", url)
        assert done.returncode == 0, done.stderr
    refused = brewmesh("config", "show", "--bus", "redis://127.0.0.1:6379/0?protocol=3")
    assert "leave protocol out of the URL" in refused.stderr


def test_an_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "brewmesh.toml"
    config.write_text("prot = 7001\n")
    done = brewmesh("config", "show", "--config", str(config))
    assert done.returncode == 2 and "--config" in done.stderr and "'prot'" in done.stderr


def test_every_setting_is_in_the_help_and_the_readme() -> None:
    helped = (
        brewmesh("up", "--help").stdout
        + brewmesh("serve", "--help").stdout
        + brewmesh("machine", "--help").stdout
    )
    for _, option in settings.options():
        assert option.env in README, f"README does not document ${option.env}"
        if option.flag:
            assert option.flag in helped and option.env in helped, f"{option.flag} is not in --help"


def test_serve_runner_without_its_peers_does_not_start(tmp_path: Path) -> None:
    done = brewmesh("serve", "runner", "--data-dir", str(tmp_path), "--bus", "redis://127.0.0.1:1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--partners" in done.stderr

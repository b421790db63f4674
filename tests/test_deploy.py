"""``deploy/``: the systemd units run the same commands as the Procfile lines the multi-process
tests start (tests/process/test_chaos.py, test_faults.py), systemd accepts them, and the
example settings they read are valid."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ipaas.cli import main
from ipaas.config import Settings
from tests.process.conftest import procfile

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = {
    "release": "ipaas-migrate.service",
    "api": "ipaas-api.service",
    "worker": "ipaas-worker@.service",
    "scheduler": "ipaas-scheduler.service",
}
INSTALLED = "/opt/ipaas/.venv/bin/ipaas"


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name)
    return parser


def _normalised(command: str) -> list[str]:
    """Arguments with the binary's path and variable defaults dropped: ``${PORT:-8000}`` and
    ``${PORT}`` are the same setting."""
    words = shlex.split(command)
    words[0] = Path(words[0]).name
    return [w.split(":-")[0] + "}" if w.startswith("${") and ":-" in w else w for w in words]


def test_the_procfile_names_every_process_type() -> None:
    assert set(procfile()) == set(UNITS)


@pytest.mark.parametrize(("kind", "unit"), sorted(UNITS.items()))
def test_each_unit_runs_its_procfile_line(kind: str, unit: str) -> None:
    service = _unit(unit)["Service"]
    assert service["ExecStart"].startswith(INSTALLED)
    assert _normalised(service["ExecStart"]) == _normalised(procfile()[kind])
    assert service["EnvironmentFile"] == "/etc/ipaas/ipaas.env"


@pytest.mark.parametrize("kind", ["api", "worker", "scheduler"])
def test_long_running_units_drain_before_systemd_kills_them(kind: str) -> None:
    service = _unit(UNITS[kind])["Service"]
    assert service["KillSignal"] == "SIGTERM"
    # Beyond IPAAS_SHUTDOWN_GRACE_S (30 s) for the processes that run or accept work.
    assert int(service["TimeoutStopSec"]) > (30 if kind != "scheduler" else 10)
    assert service["Restart"] == "on-failure"
    assert _unit(UNITS[kind])["Unit"]["Requires"] == "ipaas-migrate.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is absent")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    ipaas = Path(sys.executable).with_name("ipaas")
    names = []
    for unit in UNITS.values():
        # verify wants the binary to exist: point it at this checkout's.
        text = (DEPLOY / "systemd" / unit).read_text().replace(INSTALLED, str(ipaas))
        name = unit.replace("@.", "@1.")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    result = subprocess.run(
        ["systemd-analyze", "verify", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: any output is a defect.
    assert result.stdout + result.stderr == ""


def test_the_scheduler_command_exists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["scheduler", "--help"])
    assert exit_.value.code == 0
    assert "schedules" in capsys.readouterr().out


def test_the_example_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line of ``deploy/ipaas.env.example`` names a setting and passes its checks, but
    the key's placeholder, which stops a start until it is replaced."""
    lines = (DEPLOY / "ipaas.env.example").read_text().splitlines()
    given = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="IPAAS_SECRET_KEY: the key is not a Fernet key"):
        Settings()
    monkeypatch.setenv("IPAAS_SECRET_KEY", Fernet.generate_key().decode())
    settings = Settings()
    fields = {f"IPAAS_{name.upper()}" for name in Settings.model_fields}
    assert set(given) <= fields
    assert settings.public_url == "https://ipaas.example.com"
    assert settings.forwarded_allow_ips == ["127.0.0.1"]

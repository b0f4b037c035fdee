"""`pip install .` into an application that already pins other releases of our dependencies
(rich, SQLAlchemy) succeeds and keeps the application's pins: pyproject.toml states compatible
ranges, the exact versions are only in constraints.txt (for ./dev and CI)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: what the application pinned: releases other than constraints.txt's, inside our ranges
APP_PINS = {"rich": "13.9.4", "SQLAlchemy": "2.0.54"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_runtime_dependencies_are_ranges_and_the_app_pins_differ_from_ours() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if "==" in d]
    ours = _pins()
    for name, version in APP_PINS.items():
        assert ours[name.lower()] != version, "pick a release the constraints do not pin"


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_pip_install_into_an_application_with_its_own_pins(tmp_path: Path) -> None:
    venv = tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "install", "--quiet", *(f"{n}=={v}" for n, v in APP_PINS.items()))
    _pip(venv, "install", "--quiet", str(ROOT))  # no constraints: only our ranges apply
    _pip(venv, "check")
    probe = """
import importlib.metadata as md, sys
from fsm import Engine
versions = {n: md.version(n) for n in sys.argv[2:]}
engine = Engine(f"sqlite:///{sys.argv[1]}/app.db")
row = engine.create("service", id="s")
engine.fire("s", "job_running")
assert engine.verify() == [] and engine.get("s").state == "STARTING"
print(versions)
"""
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe, str(tmp_path), *APP_PINS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == repr(APP_PINS)  # the application's pins were kept
    version = subprocess.run(
        [str(venv / "bin" / "fsm"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("fsm 0.")

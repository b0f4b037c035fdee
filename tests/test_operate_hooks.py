"""Guards and callbacks by import path: the run config, a definition's companion file,
`--guard` / `--guards` for lint and diagram, and a held event that says which guard held it."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm import Engine
from fsm.cli import main
from fsm.config import ConfigError, config_lifecycles, load_config
from fsm.hooks import HookError, load_lifecycle, parse_specs

DEPLOYMENT = """\
name: deployment
states:
  - {name: QUEUED, initial: true}
  - {name: ROLLING, time_limit: 900, on_time_limit: time_limit, refresh: 5}
  - {name: DONE, terminal: true}
  - {name: ROLLED_BACK, terminal: true}
transitions:
  - {trigger: begin, source: QUEUED, dest: ROLLING, after: notify}
  - {trigger: progress, source: ROLLING, dest: "="}
  - {trigger: finish, source: ROLLING, dest: DONE, guards: all_healthy, unless: frozen}
  - {trigger: time_limit, source: ROLLING, dest: ROLLED_BACK}
  - {trigger: abort, source: "*", dest: ROLLED_BACK}
"""
RULES = """\
CALLS = []

def all_healthy(ctx):
    return bool(ctx.payload.get("ok"))

def frozen(ctx):
    return bool(ctx.data.get("frozen"))

def notify(ctx, dest):
    CALLS.append((ctx.entity_id, dest))

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a definition, a rules module under a unique name, and a run config."""
    module = f"rules_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "deployment.yaml").write_text(DEPLOYMENT)
    (tmp_path / f"{module}.py").write_text(RULES)
    (tmp_path / "run.yaml").write_text(
        textwrap.dedent(f"""\
            lifecycles: [deployment.yaml]
            guards: {{all_healthy: "{module}:all_healthy", frozen: "{module}:frozen"}}
            callbacks: {{notify: "{module}:notify"}}
            backends: [{{kind: sim}}]
        """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop(module, None)


def _module(project: Path) -> str:
    return next(p.stem for p in project.glob("rules_*.py"))


def test_run_config_guards_and_callbacks_drive_the_engine(project: Path, sqlite_url: str) -> None:
    (lifecycle,) = config_lifecycles(load_config(project / "run.yaml"))
    engine = Engine(sqlite_url)
    engine.register(lifecycle)
    row = engine.create("deployment", id="d1")
    engine.fire(row.id, "begin")
    assert sys.modules[_module(project)].CALLS == [("d1", "ROLLING")]
    held = engine.fire(row.id, "finish", {"ok": False})
    assert (held.state, held.transition, held.held) == ("ROLLING", None, ("all_healthy",))
    engine.fire(row.id, "progress", data={"frozen": True})
    assert engine.fire(row.id, "finish", {"ok": True}).held == ("not frozen",)
    kept = engine.fire(row.id, "progress")  # a "=" transition: kept, and nothing held it
    assert (kept.transition, kept.held) == (None, ())
    engine.fire(row.id, "progress", data={"frozen": False})
    assert engine.fire(row.id, "finish", {"ok": True}).state == "DONE"
    assert [t.to_state for t in engine.history("d1")] == ["ROLLING", "DONE"]
    assert engine.verify() == []
    engine.close()


def test_a_companion_file_supplies_the_hooks(project: Path) -> None:
    module = _module(project)
    (project / "deployment.hooks.yaml").write_text(
        f"guards: {{all_healthy: '{module}:all_healthy', frozen: '{module}:frozen'}}\n"
        f"callbacks: {{notify: '{module}:notify'}}\n"
    )
    lifecycle = load_lifecycle(project / "deployment.yaml")
    assert lifecycle.name == "deployment"
    code = main(["lint", str(project / "deployment.yaml")])
    assert code == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("{module}:missing", "has no 'missing'"),
        ("{module}:NOT_A_FUNCTION", "is a int, not a function"),
        ("not a path", "must be 'module:attribute'"),
    ],
)
def test_a_bad_import_path_is_refused_before_a_database_exists(
    project: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    config = (project / "run.yaml").read_text()
    good = f"{_module(project)}:all_healthy"
    (project / "run.yaml").write_text(config.replace(good, spec.format(module=_module(project))))
    db = project / "run.db"
    code = main(["run", "--config", "run.yaml", "--db", f"sqlite:///{db}", "--exit-when-idle"])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(project.glob("run.db*"))


def test_a_module_that_raises_while_importing_is_one_line(project: Path) -> None:
    (project / "exploding.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(HookError, match="importing 'exploding' failed: RuntimeError: boom"):
        load_lifecycle(
            project / "deployment.yaml",
            parse_specs(
                {"guards": {"all_healthy": "exploding:f", "frozen": "exploding:g"}}, "", [], project
            ),
        )


def test_lint_and_diagram_take_guard_names_or_a_module(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(project / "deployment.yaml")
    assert main(["lint", path]) == 1
    assert "unknown guard 'all_healthy'" in capsys.readouterr().out
    assert main(["lint", path, "--guards", _module(project)]) == 0
    assert main(["lint", path, "--guard", "all_healthy", "--guard", "frozen"]) == 0
    assert main(["diagram", path]) == 1
    assert "unknown guard" in capsys.readouterr().err
    assert main(["diagram", path, "--guards", _module(project)]) == 0
    assert "ROLLING --> DONE" in capsys.readouterr().out
    assert main(["diagram", path, "--guards", "no_such_module_xyz"]) == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err


@given(
    st.dictionaries(
        st.sampled_from(["guards", "callbacks", "other"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=20),
            st.dictionaries(
                st.one_of(st.text(max_size=12), st.integers()),
                st.one_of(st.text(max_size=40), st.integers(), st.none()),
                max_size=3,
            ),
        ),
    )
)
def test_hook_specs_are_checked_whole_never_raise(raw: dict[str, object]) -> None:
    problems: list[str] = []
    specs = parse_specs(raw, "", problems, Path("."))
    for kind in ("guards", "callbacks"):
        given_ = raw.get(kind)
        accepted = getattr(specs, kind)
        if isinstance(given_, dict):
            assert set(accepted) <= set(given_)
            refused = len(given_) - len(accepted)
            assert sum(p.startswith(f"{kind}") for p in problems) >= refused
        else:
            assert accepted == {}
    assert all("\n" not in p for p in problems)


def test_a_config_error_names_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("guards: {time_limit_exceeded: 'x:y'}\n")
    with pytest.raises(ConfigError, match="built in and cannot be replaced"):
        load_config(tmp_path / "run.yaml")

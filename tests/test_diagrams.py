"""The committed diagrams must be what the current definitions draw, and drawing is stable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsm.diagram import (
    FORMATS,
    Format,
    comparable_svg,
    generated,
    graphviz_version,
    main,
    render,
    svg_outline,
)
from fsm.lifecycles import BUILTIN_NAMES, builtin_lifecycles
from tests.components import unavailable

ROOT = Path(__file__).resolve().parent.parent
DIAGRAMS = ROOT / "diagrams"
TIMES = "\N{MULTIPLICATION SIGN}"
REGENERATE = "regenerate with: python -m fsm.diagram --write diagrams/"


def need_dot() -> None:
    """SVG needs graphviz's `dot`; only outside CI may its absence skip a test."""
    if shutil.which("dot") is None:
        unavailable("graphviz's `dot` is not installed here (apt-get install graphviz)")


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_mermaid_file_is_current(name: str) -> None:
    path = DIAGRAMS / f"{name}.mmd"
    assert path.exists(), f"{path} is missing; {REGENERATE}"
    fresh = render(builtin_lifecycles()[name], "mermaid")
    assert path.read_text(encoding="utf-8") == fresh, f"{path} is stale; {REGENERATE}"


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_svg_file_is_current(name: str) -> None:
    need_dot()
    path = DIAGRAMS / f"{name}.svg"
    assert path.exists(), f"{path} is missing; {REGENERATE}"
    committed = path.read_text(encoding="utf-8")
    fresh = render(builtin_lifecycles()[name], "svg")
    # the outline (nodes, edges, labels in order) must match whatever graphviz drew it
    assert svg_outline(committed) == svg_outline(fresh), f"{path} is stale; {REGENERATE}"
    if graphviz_version(committed) == graphviz_version(fresh):
        # same dot, same layout: everything but the version comment must be identical
        assert comparable_svg(committed) == comparable_svg(fresh), f"{path} is stale; {REGENERATE}"


def test_no_other_files_in_diagrams() -> None:
    expected = {f"{n}{s}" for n in BUILTIN_NAMES for s in (".mmd", ".svg")}
    assert {p.name for p in DIAGRAMS.iterdir()} == expected


def test_output_is_deterministic_and_has_no_addresses() -> None:
    lifecycles = builtin_lifecycles()
    formats = [f for f in FORMATS if f != "svg" or shutil.which("dot")]
    for name, lifecycle in lifecycles.items():
        for fmt in formats:
            first = render(lifecycle, fmt)
            assert first == render(builtin_lifecycles()[name], fmt)
            assert "0x" not in first and " at " not in first
            assert all(line == line.rstrip() for line in first.splitlines())


def test_check_mode_in_another_process_with_another_hash_seed() -> None:
    need_dot()
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    result = subprocess.run(
        [sys.executable, "-m", "fsm.diagram", "--check", str(DIAGRAMS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_check_mode_finds_stale_and_missing_files(tmp_path: Path) -> None:
    formats: tuple[Format, ...] = ("mermaid", "svg") if shutil.which("dot") else ("mermaid",)
    files = generated(formats=formats)
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    if "svg" not in formats:
        return  # --check compares SVG too, which needs dot
    assert main(["--check", str(tmp_path)]) == 0
    (tmp_path / "service.mmd").write_text("stateDiagram-v2\n", encoding="utf-8")
    (tmp_path / "host.svg").unlink()
    assert main(["--check", str(tmp_path)]) == 1


def test_terminal_states_and_time_limits_are_visible() -> None:
    lifecycle = builtin_lifecycles()["operation"]
    mermaid = render(lifecycle, "mermaid").splitlines()
    dot = render(lifecycle, "dot")
    for state in ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED"):
        assert f"  {state} --> [*]" in mermaid
        assert f"  Class {state} s_terminal" in mermaid
        assert f"{state} [label=" in dot and "peripheries=2" in dot.split(f"\t{state} [")[1]
    assert '  state "PENDING<br>time limit 5m → time_limit" as PENDING' in mermaid
    assert "  Class PENDING s_initial_timed" in mermaid
    assert '  state "RUNNING<br>time limit 1h → time_limit<br>stays on: progress" as RUNNING' in (
        mermaid
    )
    assert "  [*] --> PENDING" in mermaid


def test_reflexive_moves_are_listed_not_drawn() -> None:
    text = render(builtin_lifecycles()["host"], "mermaid")
    edges = [line.split(":")[0].split(" --> ") for line in text.splitlines() if " --> " in line]
    assert edges and all(src.strip() != dst.strip() for src, dst in edges)
    assert "stays on: deprovision, running, stopped, deallocated" in text  # DEPROVISIONING


def test_counts_and_fired_moves_are_annotated() -> None:
    lifecycle = builtin_lifecycles()["service"]
    counts = {"HEALTHY": 2, "STARTING": 1}
    fired = {("ping_ok", "STARTING", "HEALTHY"): 3}
    mermaid = render(lifecycle, "mermaid", counts=counts, fired=fired)
    assert "HEALTHY<br>stays on: job_running, ping_ok<br>2 entities" in mermaid
    assert (
        "STARTING<br>time limit 10m → time_limit<br>stays on: job_running, ping_failed<br>1 entity"
        in (mermaid)
    )
    assert "FAILED<br>from any live state: job_failed<br>0 entities" in mermaid
    assert f"  STARTING --> HEALTHY: ping_ok {TIMES}3" in mermaid.splitlines()
    dot = render(lifecycle, "dot", counts=counts, fired=fired)
    assert f'STARTING -> HEALTHY [label="ping_ok {TIMES}3" color=blue penwidth=2]' in dot
    assert render(lifecycle, "mermaid") != mermaid


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown diagram format"):
        render(builtin_lifecycles()["service"], "png")  # type: ignore[arg-type]


def test_the_readme_shows_the_current_service_diagram() -> None:
    """The README embeds the service diagram: it must be the generated one."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    embedded = readme.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert embedded == (root / "diagrams" / "service.mmd").read_text(encoding="utf-8")

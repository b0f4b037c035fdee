"""What a benchmark reports: run settings, targets, results and the printed table."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchlib import Paired

T = TypeVar("T")
BENCH_DIR = Path(__file__).resolve().parent
PG_URL = os.environ.get(
    "FSM_BENCH_PG_URL",
    os.environ.get("FSM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    batch_size: int  # events per Engine.apply in persist_batch, growth and memory_per_entity
    memory_events: int  # apply_memory: events per repetition ...
    memory_chunk: int  # ... interleaved with the anchor in chunks of this many
    memory_reps: int
    single_n: int  # persist_single: commits per repetition ...
    single_chunk: int  # ... interleaved with the anchor in chunks of this many
    single_reps: int
    big_n: int  # persist_batch entities (growth: the large size)
    small_n: int  # growth: the small size (big_n / 10)
    batch_reps: int
    small_runs: int  # small databases per repetition (the median of their times is used)
    naive_single_n: int
    naive_batch_n: int
    naive_reps: int
    tracemalloc_limit: int  # entities for the tracemalloc cross-check (0: skip it)
    refresh_big: int  # refresh_cycle_100k: sim services in the cycle (growth: the large size)
    refresh_small: int  # refresh_growth: the small size (refresh_big / 10)
    refresh_reps: int
    refresh_small_runs: int  # small databases per repetition (the median of their times)
    refresh_tick: int  # batches per Worker.refresh call (max_batches_per_tick): one lane chunk
    calls_entities: int  # backend_calls_per_cycle
    pg_per_run: int  # pg_two_workers: services due in each run ...
    pg_pairs: int  # ... and pairs of runs (1 worker, 2 workers; the order alternating)
    pg_refresh: bool  # pg_refresh_vs_sqlite: the refresh cycle on PostgreSQL too
    pg_batch_n: int  # pg_batch_raw: entities for the engine and as many for the floor
    lag_count: int  # run_lag_100k: sim services due every 10 s under one `fsm run` ...
    lag_seconds: float  # ... for this long after the first fell due

    @classmethod
    def full(cls, batch_size: int) -> Config:
        return cls(
            quick=False,
            batch_size=batch_size,
            memory_events=30_000,
            memory_chunk=1_000,
            memory_reps=5,
            single_n=400,
            single_chunk=20,
            single_reps=5,
            big_n=100_000,
            small_n=10_000,
            batch_reps=3,
            small_runs=3,
            naive_single_n=150,
            naive_batch_n=5_000,
            naive_reps=3,
            tracemalloc_limit=10_000,
            refresh_big=100_000,
            refresh_small=10_000,
            refresh_reps=3,
            refresh_small_runs=2,
            refresh_tick=5,
            calls_entities=1_000,
            pg_per_run=4_000,
            pg_pairs=4,
            pg_refresh=True,
            pg_batch_n=20_000,
            lag_count=100_000,
            lag_seconds=40.0,
        )

    @classmethod
    def small(cls, batch_size: int) -> Config:
        return cls(
            quick=True,
            batch_size=batch_size,
            memory_events=10_000,
            memory_chunk=1_000,
            memory_reps=3,
            single_n=150,
            single_chunk=15,
            single_reps=3,
            big_n=20_000,
            small_n=2_000,
            batch_reps=2,
            small_runs=2,
            naive_single_n=60,
            naive_batch_n=2_000,
            naive_reps=2,
            tracemalloc_limit=4_000,
            refresh_big=20_000,
            refresh_small=2_000,
            refresh_reps=1,
            refresh_small_runs=2,
            refresh_tick=5,
            calls_entities=1_000,
            pg_per_run=1_000,
            pg_pairs=2,
            pg_refresh=True,
            pg_batch_n=5_000,
            lag_count=20_000,
            lag_seconds=20.0,
        )


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    op: str  # ">=", "<=" or "=="
    bound: float
    on: str = "ratio"  # what the bound applies to: "ratio" or "value"

    def met(self, figure: float) -> bool:
        if self.op == "==":
            return math.isclose(figure, self.bound)
        return figure >= self.bound if self.op == ">=" else figure <= self.bound

    def __str__(self) -> str:
        text = f"{'=' if self.op == '==' else self.op} {self.bound:g}"
        return text if self.on == "ratio" else f"{text} ({self.on})"


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    value: float
    unit: str
    anchor: float
    anchor_unit: str
    ratio: float
    target: Target | None
    ratio_min: float | None = None
    ratio_max: float | None = None
    reps: int = 1
    notes: str = ""
    measured: bool = True  # False: a target named but not measured; `notes` says why

    @classmethod
    def not_measured(cls, name: str, unit: str, target: Target, why: str) -> Result:
        nan = math.nan
        return cls(
            name, nan, unit, nan, unit, nan, target, notes=f"not measured: {why}", measured=False
        )

    @property
    def passed(self) -> bool | None:
        if self.target is None or not self.measured:
            return None
        return self.target.met(self.value if self.target.on == "value" else self.ratio)

    @classmethod
    def from_paired(
        cls,
        name: str,
        runs: Paired,
        unit: str,
        anchor_unit: str,
        target: Target | None,
        notes: str,
    ) -> Result:
        ratios = runs.ratios
        return cls(
            name,
            runs.value,
            unit,
            runs.anchor,
            anchor_unit,
            runs.ratio,
            target,
            min(ratios),
            max(ratios),
            len(ratios),
            notes,
        )

    def as_json(self) -> dict[str, Any]:
        if not self.measured:  # no NaN in the JSON
            return {
                "value": None,
                "unit": self.unit,
                "ratio": None,
                "measured": False,
                "target": str(self.target),
                "pass": None,
                "notes": self.notes,
            }
        return {
            "value": self.value,
            "unit": self.unit,
            "anchor": self.anchor,
            "anchor_unit": self.anchor_unit,
            "ratio": self.ratio,
            "target": None if self.target is None else str(self.target),
            "pass": self.passed,
            "ratio_min": self.ratio_min,
            "ratio_max": self.ratio_max,
            "reps": self.reps,
            "notes": self.notes,
        }


def rate_pair(values: Sequence[float], anchors: Sequence[float], count: int) -> Paired:
    """Seconds -> per-second rates for `count` operations."""
    return Paired(tuple(count / v for v in values), tuple(count / a for a in anchors))


# -- the command line ------------------------------------------------------------------------


def format_number(value: float, unit: str) -> str:
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if unit.startswith("x"):
        return f"{value:.2f}{unit[1:2]}"
    return f"{value:,.1f} {unit}"


def render(results: Sequence[Result]) -> str:
    header = ("benchmark", "value", "anchor", "ratio", "min..max", "target", "result")
    rows = []
    for r in results:
        if not r.measured:
            rows.append((r.name, "not measured", "-", "-", "-", str(r.target), "(n/m)"))
            continue
        spread = (
            f"{r.ratio_min:.2f}..{r.ratio_max:.2f}"
            if r.ratio_min is not None and r.ratio_max is not None and r.reps > 1
            else "-"
        )
        verdict = {True: "PASS", False: "FAIL", None: "(ref)"}[r.passed]
        rows.append(
            (
                r.name,
                format_number(r.value, r.unit),
                format_number(r.anchor, r.anchor_unit),
                f"{r.ratio:.3f}",
                spread,
                str(r.target) if r.target else "-",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    out.append("")
    out += [f"{r.name}: {r.notes}" for r in results if r.notes]
    return "\n".join(out)

"""Engine benchmarks, each measured against an anchor run alongside it in the same process.

    python bench/run.py                  # full run (~10 minutes on a busy 2-core box), the table
    python bench/run.py --quick          # a fifth of the sizes, a smoke check (not for targets)
    python bench/run.py --only NAME      # one benchmark (repeatable); see --help for the names
    python bench/run.py --json out.json  # also write {name: {value, unit, anchor, ratio, ...}}

How the noise of a shared 2-core machine is kept out of the ratios: a measurement and its anchor
are interleaved chunk by chunk (a few hundred events or one batch at a time, the order rotating),
so both see the same momentary load; each repetition gives one ratio. The table shows medians
over the repetitions: value = median engine rate, anchor = median anchor rate, ratio = median
of the per-repetition ratios (so not exactly value/anchor), and the smallest..largest ratio.

The anchors are in `anchors.py` (the conventional hand-written FSM, the floors of our own
statements on SQLite and PostgreSQL, the refresh floor, the pytransitions + Core peer); the
suites in `persist_suite.py`, `peer_suite.py`, `refresh_suite.py` and `runtime_suite.py`.

Databases live in a fresh temporary directory; entities are created beforehand with
`Engine.create_many` (untimed) and copied as closed files for each repetition.

The runtime rows drive the real worker: a refresh cycle of simulated services on SQLite against
the same events triggered in memory (and its growth from 10k to 100k entities), backend calls per
cycle, two worker processes against one on PostgreSQL (a fresh schema, dropped afterwards; the
1- and 2-worker runs alternate), Slurm calls per cycle, and the wall time of `fsm demo`.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from benchlib import env_summary
from peer_suite import PeerSuite
from persist_suite import PersistSuite
from refresh_suite import RefreshSuite
from results import PG_URL, Config, Result, render
from runtime_suite import RuntimeSuite


class Bench(PersistSuite, PeerSuite, RefreshSuite, RuntimeSuite):
    """Every suite, sharing one working directory and its databases."""


# -- the command line ------------------------------------------------------------------------

GROUPS: dict[str, tuple[str, ...]] = {
    "apply_memory": ("apply_memory", "apply_memory_batch"),
    "persist_single": ("persist_single",),
    "persist_batch": (
        "persist_batch",
        "growth",
        "persist_batch_conventional",
        "persist_batch_floor",
        "growth_vs_conventional",
    ),
    "memory_per_entity": ("memory_per_entity",),
    "naive": ("naive_orm_single", "naive_orm_batch", "orm_peer", "transitions_core_peer"),
    "refresh_cycle": (
        "refresh_cycle_100k",
        "refresh_growth",
        "refresh_growth_vs_floor",
        "refresh_cycle_floor",
        "refresh_cycle_ceiling",
        "pg_refresh_vs_sqlite",
        "pg_refresh_floor",
    ),
    "backend_calls": ("backend_calls_per_cycle",),
    "pg_batch": ("pg_batch_raw",),
    "pg_two_workers": ("pg_two_workers",),
    "run_lag": ("run_lag_100k",),
    "slurm_calls": ("slurm_calls_per_cycle",),
    "demo": ("demo_wall_seconds",),
}
ORDER = [name for names in GROUPS.values() for name in names]


def run_group(bench: Bench, group: str) -> list[Result]:
    runner: dict[str, Callable[[], list[Result]]] = {
        "apply_memory": bench.apply_memory,
        "persist_single": bench.persist_single,
        "persist_batch": bench.persist_batch,
        "memory_per_entity": bench.memory_per_entity,
        "naive": bench.naive,
        "refresh_cycle": bench.refresh_cycle,
        "backend_calls": bench.backend_calls,
        "pg_batch": bench.pg_batch,
        "pg_two_workers": bench.pg_two_workers,
        "run_lag": bench.run_lag,
        "slurm_calls": bench.slurm_calls,
        "demo": bench.demo,
    }
    return runner[group]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="FSM engine benchmarks against anchors measured in the same run."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (not for targets)")
    parser.add_argument(
        "--only", action="append", choices=ORDER, metavar="NAME", help=f"one of {', '.join(ORDER)}"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per Engine.apply")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    parser.add_argument(
        "--pg-url",
        default=PG_URL,
        help="libpq URL of the PostgreSQL for pg_two_workers (a schema is made, then dropped)",
    )
    args = parser.parse_args(argv)

    cfg = Config.small(args.batch_size) if args.quick else Config.full(args.batch_size)
    wanted = list(dict.fromkeys(args.only or ORDER))
    groups = [g for g, names in GROUPS.items() if any(n in wanted for n in names)]
    env = ", ".join(f"{k} {v}" for k, v in env_summary().items())
    print(f"fsm engine benchmarks ({'quick' if cfg.quick else 'full'} run; {env})", flush=True)

    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fsm-bench-") as tmp:
        bench = Bench(cfg, Path(tmp), args.pg_url)
        for group in groups:
            gc.collect()
            began = perf_counter()
            results += [r for r in run_group(bench, group) if r.name in wanted]
            bench.log(f"{group}: {perf_counter() - began:.1f}s")
    results.sort(key=lambda r: ORDER.index(r.name))
    print(render(results))
    for reason in bench.skipped:
        print(f"skipped {reason}")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json is not None:
        args.json.write_text(json.dumps({r.name: r.as_json() for r in results}, indent=2) + "\n")
    failed = [r.name for r in results if r.passed is False]
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())

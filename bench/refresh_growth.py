"""refresh_growth and refresh_growth_vs_floor: how a refresh cycle's cost per entity grows with
the table, and how much of that growth the refresh floor (e), the worker's statements alone,
shows in the same repetitions (a deeper B-tree costs every store more per row)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from results import Result, Target


def growth_results(
    sizes: tuple[int, int],
    engine_s: tuple[Sequence[float], Sequence[float]],
    floor_s: tuple[Sequence[float], Sequence[float]],
    small_runs: int,
) -> list[Result]:
    """`sizes` is (big, small); each pair of timings is (big cycle, median small cycle) per
    repetition. The floor's cycles ran on copies of the same databases, interleaved with the
    engine's, so both see the same deeper B-trees and the same momentary load."""
    big, small = sizes
    growth = tuple(b / s for b, s in zip(*engine_s, strict=True))
    floor_growth = tuple(b / s for b, s in zip(*floor_s, strict=True))
    against = tuple(g / f for g, f in zip(growth, floor_growth, strict=True))

    def per(times: Sequence[float], count: int) -> float:
        return statistics.median(times) / count * 1e6

    engine_per = f"{per(engine_s[1], small):.1f} -> {per(engine_s[0], big):.1f} us/entity"
    floor_per = f"{per(floor_s[1], small):.1f} -> {per(floor_s[0], big):.1f} us/entity"
    return [
        Result(
            "refresh_growth",
            statistics.median(growth),
            f"x t({big // 1000}k)/t({small // 1000}k)",
            10.0,
            "x (linear)",
            statistics.median(growth) / 10.0,
            Target("<=", 1.1),
            min(growth) / 10.0,
            max(growth) / 10.0,
            len(growth),
            f"refresh cycle time at {big:,} vs {small:,} sim services (median of {small_runs} "
            f"small databases per repetition, their Worker.refresh calls interleaved with the "
            f"big cycle); ratio = (t_big/t_small)/10, i.e. the per-entity cost ratio "
            f"({engine_per}); the refresh floor's own ratio: "
            f"{statistics.median(floor_growth) / 10.0:.3f}",
        ),
        Result(
            "refresh_growth_vs_floor",
            statistics.median(growth),
            "x growth",
            statistics.median(floor_growth),
            "x growth",
            statistics.median(against),
            None,
            min(against),
            max(against),
            len(against),
            f"reference, no target (how much of refresh_growth is the store's own): the "
            f"refresh cycle's per-entity cost growth {small // 1000}k -> {big // 1000}k "
            f"({engine_per}) / the refresh floor's (e) on copies of the same databases "
            f"({floor_per}), same repetitions, interleaved call by call",
        ),
    ]

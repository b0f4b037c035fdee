"""Child process of `run.py` for memory_per_entity: resident memory while applying batches.

Run in a fresh interpreter, so that the baseline holds nothing from the other benchmarks (and no
garbage from creating the entities that the allocator could hand back to the engine):

1. read the entity ids (the caller's input), open the engine, `gc.collect()`;
2. baseline = VmRSS; reset VmHWM (`/proc/self/clear_refs` 5) so the peak is this run's;
3. apply every entity in batches, one transition each, sampling VmRSS after every batch;
4. peak = max(sampled VmRSS, VmHWM);
   bytes per entity = (peak - baseline) / entities applied  (the benchmark's value);
   steady slope = (last sample - sample after the first batch) / entities after the first batch
   (~0 when nothing is kept per entity; one-off costs such as SQLite's page cache filling up and
   one batch's working set are in the value, not in the slope).

With `--tracemalloc` the same run is traced by Python's allocator tracer instead: the traced
peak above the baseline divided by the batch size is what one in-flight event costs in Python
objects (rows, heads, records, parameters, outcomes); SQLite's own memory is not traced.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import time
import tracemalloc
from pathlib import Path

from benchlib import batch_event, proc_status_bytes, reset_peak_rss, sqlite_url

from fsm import Engine, Event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--limit", type=int, default=0, help="apply only this many (0: all)")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)

    with sqlite3.connect(args.db) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM entity ORDER BY rowid")]
    total = len(ids) if args.limit <= 0 else min(args.limit, len(ids))
    batch: int = args.batch
    engine = Engine(sqlite_url(args.db))

    def apply(start: int) -> None:
        stop = min(start + batch, total)
        result = engine.apply([Event(ids[k], batch_event(k)) for k in range(start, stop)])
        if result.errors:
            raise RuntimeError(f"{len(result.errors)} events failed: {result.errors[0]}")

    gc.collect()
    traced = bool(args.tracemalloc)
    if traced:
        tracemalloc.start()
    traced_base = tracemalloc.get_traced_memory()[0] if traced else 0
    baseline = proc_status_bytes("VmRSS")
    hwm_reset = reset_peak_rss()
    samples: list[int] = []
    started = time.perf_counter()
    for start in range(0, total, batch):
        apply(start)
        samples.append(proc_status_bytes("VmRSS"))
    seconds = time.perf_counter() - started
    hwm = proc_status_bytes("VmHWM") if hwm_reset else 0
    traced_peak = tracemalloc.get_traced_memory()[1] if traced else 0
    gc.collect()
    final = proc_status_bytes("VmRSS")
    traced_final = tracemalloc.get_traced_memory()[0] if traced else 0
    if traced:
        tracemalloc.stop()
    engine.close()
    peak = max(max(samples), hwm)
    after_first = min(batch, total)
    report = {
        "entities": total,
        "batch": batch,
        "seconds": seconds,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "hwm_reset": hwm_reset,
        "final_rss": final,
        "rss_peak_per_entity": (peak - baseline) / total,
        "rss_steady_slope": (samples[-1] - samples[0]) / max(total - after_first, 1),
        "rss_retained_per_entity": (final - baseline) / total,
        "tracemalloc": traced,
        "traced_peak_per_inflight_event": (traced_peak - traced_base) / after_first
        if traced
        else None,
        "traced_retained_per_entity": (traced_final - traced_base) / total if traced else None,
    }
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

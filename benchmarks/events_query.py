"""QueryEvents latency over a large event log, and the capture path's cost of writing an event.

Generates N passages (default 1,000,000) for one community over ~30 days into a temporary
``events.db`` (EventStore.import_events: executemany in batches): 10 pedestrian gates and 2
vehicle barriers, 3,000 residents, a pool of strangers, 900 plates, rush hours at 7–9 and
17–20 h, realistic decision mixes. Then, for one-day windows on random days, measures
``EventStore.query`` p50/p99/max over ``--queries`` calls per case: no filter, each filter,
a combination, deep cursor pages (pages 10–40 of a day), and a 30-day Trajectory; prints each
case's SQLite plan. Last, ``EventWriter.submit`` p50/p99 (the capture path's share).

Run: ``python -m benchmarks.events_query [--events 1000000] [--queries 300]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cluster.events.model import Event, event_id
from cluster.events.store import EventStore
from cluster.events.writer import EventWriter

COMMUNITY = "bench"
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC+0
FACE_GATES = [f"door-{i}" for i in range(10)]
CAR_GATES = ["barrier-north", "barrier-south"]
RESIDENTS = [f"r{i:05d}" for i in range(3000)]
PLATES = [f"京A{i:05d}" for i in range(900)]
# Hour-of-day weights: quiet nights, rush hours.
HOURS = np.array(
    [1, 1, 1, 1, 1, 2, 4, 10, 12, 8, 5, 5, 6, 5, 4, 5, 6, 10, 12, 10, 7, 5, 3, 2], dtype=float
)


def generate(n: int, days: int, seed: int) -> Iterator[Event]:
    """``n`` passages of ``COMMUNITY`` over ``days`` days, in time order."""
    rng = np.random.default_rng(seed)
    day = rng.integers(0, days, n)
    hour = rng.choice(24, n, p=HOURS / HOURS.sum())
    ends = np.sort(T0 + day * DAY + hour * 3600.0 + rng.random(n) * 3600.0)
    # Whole seconds for a few: ties on end time exist, as with a 1 s camera clock.
    ends[rng.random(n) < 0.05] //= 1.0
    kinds = rng.random(n)
    pick = rng.random(n)
    who = rng.integers(0, 1_000_000, n)
    durations = 0.5 + rng.random(n) * 4.0
    for i in range(n):
        end = float(ends[i])
        start = end - float(durations[i])
        person = stranger = plate = role = None
        liveness: float | None = None
        if kinds[i] < 0.8:
            kind, gate = "face", FACE_GATES[who[i] % len(FACE_GATES)]
            liveness = 0.97
            p = pick[i]
            if p < 0.75:
                action, person, role = "OPEN", RESIDENTS[who[i] % len(RESIDENTS)], "resident"
            elif p < 0.755:
                action, person, role = "ALERT", f"w{who[i] % 20}", "watchlist"
            elif p < 0.90:
                action, stranger = "STRANGER", f"s{who[i] % 5000}"
            else:
                action = "NONE"
        else:
            kind, gate = "plate", CAR_GATES[who[i] % len(CAR_GATES)]
            if pick[i] < 0.8:
                action, plate = "OPEN", PLATES[who[i] % len(PLATES)]
                person, role = RESIDENTS[who[i] % len(RESIDENTS)], "resident"
            else:
                action, plate = "NONE", f"沪B{who[i] % 20000:05d}"
        track = f"{gate}-{i}"
        yield Event(
            id=event_id(COMMUNITY, gate, track, start),
            community=COMMUNITY,
            gate=gate,
            device=f"cam-{gate}",
            kind=kind,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
            person_id=person,
            stranger_id=stranger,
            plate=plate,
            score=0.9,
            quality=0.8,
            liveness=liveness,
            start=start,
            end=end,
            role=role,
            track_id=track,
        )


def percentiles_ms(samples_s: list[float]) -> tuple[float, float, float]:
    a = np.asarray(samples_s) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def query_cases(
    store: EventStore, days: int, queries: int, rng: random.Random
) -> list[tuple[str, dict[str, Any], list[float], int]]:
    """``(case, example filters, latencies in s, rows on the last call)`` per case."""

    def window() -> dict[str, Any]:
        d = rng.randrange(days)
        return {"since": T0 + d * DAY, "until": T0 + (d + 1) * DAY}

    cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("day, no filter", window),
        ("day, gate", lambda: {**window(), "gate": rng.choice(FACE_GATES)}),
        ("day, person", lambda: {**window(), "person_id": rng.choice(RESIDENTS)}),
        ("day, stranger", lambda: {**window(), "stranger_id": f"s{rng.randrange(5000)}"}),
        ("day, plate", lambda: {**window(), "plate": rng.choice(PLATES)}),
        ("day, action ALERT", lambda: {**window(), "action": "ALERT"}),
        ("day, kind plate", lambda: {**window(), "kind": "plate"}),
        (
            "day, gate + OPEN",
            lambda: {**window(), "gate": rng.choice(FACE_GATES), "action": "OPEN"},
        ),
        ("day, limit 1000", lambda: {**window(), "limit": 1000}),
    ]
    results = []
    for name, make in cases:
        samples, rows = [], 0
        example: dict[str, Any] = {}
        for _ in range(queries):
            example = make()
            t0 = time.perf_counter()
            page, _ = store.query(COMMUNITY, **example)
            samples.append(time.perf_counter() - t0)
            rows = len(page)
        results.append((name, example, samples, rows))

    # Deep pages: follow the cursor through a day; time pages 10..40.
    samples = []
    example = {}
    while len(samples) < queries:
        example = window()
        page, cursor = store.query(COMMUNITY, **example)
        for n in range(2, 41):
            if cursor is None:
                break
            t0 = time.perf_counter()
            page, cursor = store.query(COMMUNITY, cursor=cursor, **example)
            if n >= 10:
                samples.append(time.perf_counter() - t0)
    results.append(("day, cursor pages 10–40", example, samples, len(page)))

    samples = []
    for _ in range(queries):
        person = rng.choice(RESIDENTS)
        t0 = time.perf_counter()
        rows = len(store.trajectory(person_id=person))
        samples.append(time.perf_counter() - t0)
    results.append(("Trajectory, person, 30 days", {"person_id": person}, samples, rows))
    return results


def submit_cost(tmp: Path, n: int) -> tuple[float, float, float, float]:
    """``EventWriter.submit`` p50/p99/max in µs with a 6 KB thumbnail, and store throughput."""
    store = EventStore(tmp / "writer")
    writer = EventWriter(store, queue_size=n + 1)
    thumb = b"\xff\xd8\xff" + bytes(6000)
    events = list(generate(n, 1, seed=99))
    costs = []
    t_start = time.perf_counter()
    for e in events:
        t0 = time.perf_counter_ns()
        writer.submit(e, thumb)
        costs.append(time.perf_counter_ns() - t0)
        time.sleep(0)  # let the writer thread run, as between camera frames
    writer.flush(120.0)
    rate = n / (time.perf_counter() - t_start)
    writer.close()
    store.close()
    a = np.asarray(costs) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max()), rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--submits", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, help="keep the database here (default: temp)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="smartgate-bench-events-") as tmp_name:
        base = args.data_dir or Path(tmp_name)
        store = EventStore(base)
        have = store.count_events(COMMUNITY)
        if have < args.events:
            t0 = time.perf_counter()
            added = store.import_events(generate(args.events, args.days, args.seed))
            gen_s = time.perf_counter() - t0
            print(f"generated {added:,} events in {gen_s:.1f} s ({added / gen_s:,.0f}/s)")
        size_mb = sum(p.stat().st_size for p in base.glob("events.db*")) / 1e6
        total = store.count_events(COMMUNITY)
        print(f"\n{total:,} events of one community over {args.days} days, {size_mb:,.0f} MB\n")

        rng = random.Random(args.seed)
        print("| query | p50 ms | p99 ms | max ms | rows | plan |")
        print("|---|---|---|---|---|---|")
        worst = 0.0
        for name, example, samples, rows in query_cases(store, args.days, args.queries, rng):
            p50, p99, mx = percentiles_ms(samples)
            worst = max(worst, p99)
            filters = {k: v for k, v in example.items() if k != "limit"}
            plan = (
                "; ".join(store.explain_query(COMMUNITY, **filters))
                if not name.startswith("Trajectory")
                else "events_by_person + sort"
            )
            print(f"| {name} | {p50:.2f} | {p99:.2f} | {mx:.2f} | {rows} | {plan} |")
        print(f"\n{len(samples)}+ queries per case; worst p99 {worst:.2f} ms (target ≤ 50 ms)")

        p50, p99, mx, rate = submit_cost(Path(tmp_name), args.submits)
        print(
            f"\nEventWriter.submit (6 KB thumbnail), {args.submits:,} calls: p50 {p50:.1f} µs, "
            f"p99 {p99:.1f} µs, max {mx:.0f} µs; writer thread stored {rate:,.0f} events/s"
        )
        store.close()
    return 0 if worst <= 50.0 else 1


if __name__ == "__main__":
    sys.exit(main())

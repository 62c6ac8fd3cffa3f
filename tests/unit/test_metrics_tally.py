"""The hot path's metric tally writes exactly what direct updates would have written."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from api.metrics import Tally


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_tallied_updates_equal_direct_updates_after_a_flush() -> None:
    rng = random.Random(7)
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.005, 0.01, 0.1, 1.0)

    def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Gauge]:
        return (
            Counter("reqs", "r", ["route"], registry=registry),
            Histogram("dur", "d", ["route"], buckets=buckets, registry=registry),
            Gauge("busy", "b", registry=registry),
        )

    c1, h1, g1 = metrics(direct)
    c2, h2, g2 = metrics(tallied)
    tally = Tally()
    t_counts = {r: tally.counter(c2.labels(r)) for r in ("a", "b")}
    t_durations = {r: tally.histogram(h2.labels(r)) for r in ("a", "b")}
    t_busy = tally.counter(g2)
    # Values on bucket bounds too: a value equal to a bound belongs to that bound's bucket.
    values = [rng.choice([0.0, 0.001, 0.0049, 0.005, 0.05, 1.0, 3.0]) for _ in range(500)]
    for i, v in enumerate(values):
        route = "ab"[i % 2]
        c1.labels(route).inc()
        h1.labels(route).observe(v)
        g1.inc()
        t_counts[route].inc()
        t_durations[route].observe(v)
        t_busy.inc()
        if i % 3:
            g1.dec()
            t_busy.dec()
    assert _samples(tallied) != _samples(direct)  # nothing written before the flush
    assert tally.due(idle=True)
    tally.flush()
    assert _samples(tallied) == _samples(direct)
    assert not tally.due(idle=True)  # nothing left to write
    tally.flush()  # a second flush writes nothing twice
    assert _samples(tallied) == _samples(direct)


def test_a_busy_worker_flushes_after_enough_updates() -> None:
    registry = CollectorRegistry()
    tally = Tally()
    hits = tally.counter(Counter("hits", "h", registry=registry))
    for _ in range(Tally.FLUSH_EVERY - 1):
        hits.inc()
    assert not tally.due(idle=False)
    hits.inc()
    assert tally.due(idle=False)

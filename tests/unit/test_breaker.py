"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

import pytest

from core.breaker import Breaker
from core.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_fails_fast_then_probes_and_closes() -> None:
    clock = Clock()
    b = Breaker("dep", threshold=3, cool_down_s=2.0, clock=clock)
    for _ in range(2):
        b.check()
        b.failure()
    assert b.state == "closed"
    b.check()
    b.failure()
    assert b.state == "open"
    with pytest.raises(Unavailable) as refused:
        b.check()
    assert refused.value.status == 503 and refused.value.retry_after_s == 2
    assert "circuit open" in refused.value.detail
    clock.now += 2.1
    assert b.state == "half_open"
    b.check()  # the probe goes through...
    with pytest.raises(Unavailable):
        b.check()  # ...and only the probe
    b.success()
    assert b.state == "closed"
    b.check()


def test_a_failed_probe_opens_it_again_for_longer() -> None:
    clock = Clock()
    b = Breaker("dep", threshold=1, cool_down_s=2.0, max_cool_down_s=5.0, clock=clock)
    b.failure()
    clock.now += 2.1
    b.check()
    b.failure()
    assert b.state == "open"
    clock.now += 2.1
    assert b.state == "open"  # 4 s this time
    clock.now += 2.0
    b.check()
    b.failure()
    clock.now += 4.9
    assert b.state == "open"  # capped at 5 s
    clock.now += 0.2
    assert b.state == "half_open"


def test_late_failures_of_calls_from_before_it_opened_do_not_lengthen_it() -> None:
    clock = Clock()
    b = Breaker("dep", threshold=2, cool_down_s=2.0, clock=clock)
    for _ in range(10):  # many calls in flight when the dependency went away
        b.failure()
    clock.now += 2.1
    assert b.state == "half_open"


def test_a_probe_that_never_reports_frees_the_slot_after_a_cool_down() -> None:
    clock = Clock()
    b = Breaker("dep", threshold=1, cool_down_s=2.0, clock=clock)
    b.failure()
    clock.now += 2.1
    b.check()  # a probe that is then cancelled: no success(), no failure()
    with pytest.raises(Unavailable):
        b.check()
    clock.now += 2.1
    b.check()  # another probe may go

"""The scalper: one identity that tries to get more seats than the per-buyer limit."""

from __future__ import annotations

import os

import gevent
from locust import between, task

from loadtest.flash_sale import API, SALE, Buyer

LIMIT = int(os.environ.get("TB_HOLDS_MAX_SEATS_PER_BUYER", "6"))


class Scalper(Buyer):
    """Fires holds in parallel bursts and one oversized hold; must never pass the limit.

    Every burst asks for 2 seats per hold, 6 holds at once (12 seats, twice the limit).
    The sum of seats won must stay within the limit; anything beyond is a BREACH. Then
    the scalper releases what it got and tries again.
    """

    wait_time = between(1.0, 3.0)
    weight = 1

    def _hold(self, seats: list[str], name: str) -> dict[str, object] | None:
        with self.client.post(
            f"{API}/events/{SALE.event(self)}/holds",
            json={"seats": seats},
            headers=self.auth,
            name=name,
            catch_response=True,
        ) as resp:
            if resp.status_code == 201:
                return resp.json()  # type: ignore[no-any-return]
            if resp.status_code in (409, 422, 429):
                resp.success()  # refused: what we want
            else:
                resp.failure(f"hold answered {resp.status_code}")
            return None

    @task
    def burst(self) -> None:
        groups = [g for g in (SALE.take_group(self, 2) for _ in range(6)) if g]
        jobs = [gevent.spawn(self._hold, g, "holds (scalper burst)") for g in groups]
        gevent.joinall(jobs, timeout=30)
        holds = [j.value for j in jobs if j.value]
        won = sum(len(h["seats"]) for h in holds)  # type: ignore[arg-type, misc]
        if won > LIMIT:
            self.report("BREACH", "scalper limit", f"{won} seats in parallel holds > {LIMIT}")
        # One hold bigger than the limit at once.
        big = SALE.take_group(self, LIMIT + 1)
        if big and self._hold(big, "holds (scalper oversized)") is not None:
            self.report("BREACH", "scalper oversized hold", f"{len(big)} seats in one hold")
        for hold in holds:
            self.client.delete(
                f"{API}/holds/{hold['hold_id']}", headers=self.auth, name="holds/{id} (release)"
            )

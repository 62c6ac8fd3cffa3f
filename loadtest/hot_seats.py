"""Hot seats: everyone wants the same front-row seats at the same moment."""

from __future__ import annotations

import random

import gevent
from locust import between, task

from loadtest.flash_sale import API, SALE, Buyer

# Seats this process saw won and not yet released: seat -> buyer. Two live winners of
# one seat would be a double sale in the making.
_WINNERS: dict[str, str] = {}


class HotSeatFan(Buyer):
    """Grabs one of the front 20 seats; mostly 409s. A winner keeps it briefly, then lets go.

    Letting go keeps the seats contested for the whole run. The record of a winner is
    dropped before the release is sent, so a fast next winner is never a false alarm.
    """

    wait_time = between(0.05, 0.5)
    weight = 2

    @task
    def grab(self) -> None:
        seat = random.choice(SALE.front_seats(self))
        with self.client.post(
            f"{API}/events/{SALE.event(self)}/holds",
            json={"seats": [seat]},
            headers=self.auth,
            name="holds (hot seat)",
            catch_response=True,
        ) as resp:
            if resp.status_code in (409, 429):
                resp.success()  # lost the race, or already holding its share
                return
            if resp.status_code != 201:
                resp.failure(f"hold answered {resp.status_code}")
                return
            hold_id = resp.json()["hold_id"]
        other = _WINNERS.get(seat)
        if other is not None and other != self.sub:
            self.report("BREACH", "hot seat held twice", f"{seat}: {other} and {self.sub}")
        _WINNERS[seat] = self.sub
        gevent.sleep(random.uniform(0.2, 1.0))
        _WINNERS.pop(seat, None)
        self.client.delete(f"{API}/holds/{hold_id}", headers=self.auth, name="holds/{id} (release)")

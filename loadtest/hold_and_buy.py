"""Hold and buy: a buyer picks adjacent seats on the map, holds them and pays."""

from __future__ import annotations

import random

from locust import between, task

from loadtest.flash_sale import API, SALE, Buyer


class HoldAndBuyBuyer(Buyer):
    """Holds 1-4 adjacent seats it saw free; a 409 (someone was faster) means try again.

    After a purchase the buyer leaves and a new one (new identity) takes its place, so
    the per-buyer limit never blocks the honest crowd.
    """

    wait_time = between(0.1, 1.0)
    weight = 4

    @task
    def hold_and_buy(self) -> None:
        size = random.choice((1, 2, 2, 3, 4, 4))
        seats = SALE.take_group(self, size)
        if seats is None:
            return  # sold out
        with self.client.post(
            f"{API}/events/{SALE.event(self)}/holds",
            json={"seats": seats},
            headers=self.auth,
            name="holds (seats)",
            catch_response=True,
        ) as resp:
            if resp.status_code == 409:
                resp.success()  # taken by a faster buyer: expected in a flash sale
                return
            if resp.status_code != 201:
                resp.failure(f"hold answered {resp.status_code}")
                return
            hold = resp.json()
            got = sorted(seat["seat_id"] for seat in hold["seats"])
            if got != sorted(seats):
                self.report("BREACH", "hold seats", f"asked {seats}, got {got}")
        self.buy(hold["hold_id"])
        self.login()

"""Best available: "give me 2 PLATINUM seats together", the server picks."""

from __future__ import annotations

import random

from locust import between, task

from loadtest.flash_sale import API, SALE, Buyer


class BestAvailableBuyer(Buyer):
    """Asks for N adjacent seats of a category; buys most holds and releases some."""

    wait_time = between(0.2, 1.5)
    weight = 2

    @task
    def best_available(self) -> None:
        quantity = random.choice((1, 2, 2, 3, 4))
        category = random.choice(SALE.category_names(self))
        with self.client.post(
            f"{API}/events/{SALE.event(self)}/holds",
            json={"quantity": quantity, "category": category},
            headers=self.auth,
            name="holds (best available)",
            catch_response=True,
        ) as resp:
            if resp.status_code == 409:
                resp.success()  # nothing left together in that category
                return
            if resp.status_code != 201:
                resp.failure(f"hold answered {resp.status_code}")
                return
            hold = resp.json()
            if len(hold["seats"]) != quantity:
                self.report("BREACH", "best available size", f"{quantity} -> {hold['seats']}")
        if random.random() < 0.2:
            # Changed their mind: give the seats back.
            self.client.delete(
                f"{API}/holds/{hold['hold_id']}", headers=self.auth, name="holds/{id} (release)"
            )
            return
        self.buy(hold["hold_id"])
        self.login()

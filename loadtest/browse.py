"""Browsing: the crowd that looks before (and while) it buys. No login."""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

from loadtest.flash_sale import API, SALE


class Browser(FastHttpUser):
    """Lists events, opens one, and keeps its seat map fresh with ETag revalidation."""

    wait_time = between(0.5, 2.0)
    weight = 3

    def on_start(self) -> None:
        self.etag: str | None = None

    @task(2)
    def list_events(self) -> None:
        params: dict[str, str | int] = {"limit": 10}
        if random.random() < 0.5:
            params["category"] = random.choice(["CONCERT", "SPORTS", "FESTIVAL", "THEATER"])
        self.client.get(f"{API}/events", params=params, name="events")

    @task(1)
    def open_event(self) -> None:
        self.client.get(f"{API}/events/{SALE.event(self)}", name="events/{id}")

    @task(3)
    def watch_seat_map(self) -> None:
        """A 304 means the map did not change since the last look: cheap for everyone."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        with self.client.get(
            f"{API}/events/{SALE.event(self)}/seats",
            headers=headers,
            name="seat map (revalidate)",
            catch_response=True,
        ) as resp:
            if resp.status_code in (200, 304):
                self.etag = resp.headers.get("ETag") or self.etag
                resp.success()

"""What every flash-sale scenario shares: the event on sale, its seats, a buyer's login.

Settings (environment, all optional):

- ``TB_LOADTEST_EVENT_ID``: the event on sale. Default: the seed's biggest event
  (found by ``TB_LOADTEST_EVENT_QUERY``, default "Libertadores").
- ``TB_LOADTEST_ORDER_POLLS``: how often a buyer polls its order (default 20, every 0.5 s).

The seat map is ``core.events.SeatMap``: sections -> rows -> runs of seats with one
status character per seat; a seat id is ``"<section>-<row>-<number>"``.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from locust import FastHttpUser, events

API = "/api/v1"
FREE = "f"


def seats_of(seat_map: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(seat_id, category, status_code)`` for every seat of a seat map, front first."""
    for section in seat_map.get("sections", ()):
        for run in section.get("rows", ()):
            first = int(run["first"])
            for offset, code in enumerate(run["status"]):
                seat = f"{section['code']}-{run['row']}-{first + offset}"
                yield seat, run["category"], code


def free_runs(seat_map: dict[str, Any], size: int) -> list[list[str]]:
    """Groups of ``size`` adjacent free seats (one row), the way a buyer picks them."""
    groups: list[list[str]] = []
    for section in seat_map.get("sections", ()):
        for run in section.get("rows", ()):
            first = int(run["first"])
            status: str = run["status"]
            i = 0
            while i + size <= len(status):
                if status[i : i + size] == FREE * size:
                    prefix = f"{section['code']}-{run['row']}-"
                    groups.append([f"{prefix}{first + i + k}" for k in range(size)])
                    i += size
                else:
                    i += 1
    return groups


class SaleState:
    """Per-process view of the sale: the event id and a shuffled pool of free seat groups.

    Each locust process refreshes its pool from the live seat map when it runs dry, so
    processes compete for seats the way real buyers do (some holds get 409).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.event_id: int | None = None
        self.categories: list[str] = []
        self._groups: list[list[str]] = []
        self._front: list[str] = []

    def event(self, user: FastHttpUser) -> int:
        if self.event_id is None:
            configured = os.environ.get("TB_LOADTEST_EVENT_ID")
            if configured:
                self.event_id = int(configured)
            else:
                query = os.environ.get("TB_LOADTEST_EVENT_QUERY", "Libertadores")
                with user.client.get(
                    f"{API}/events", params={"q": query, "limit": 5}, name="events?q="
                ) as resp:
                    items = resp.json()["items"]
                if not items:
                    raise RuntimeError(f"no event matches {query!r}; set TB_LOADTEST_EVENT_ID")
                self.event_id = int(max(items, key=lambda e: e["capacity"])["id"])
        return self.event_id

    def _refresh(self, user: FastHttpUser, size: int) -> None:
        event_id = self.event(user)
        with user.client.get(f"{API}/events/{event_id}/seats", name="seat map") as resp:
            seat_map = resp.json()
        self.categories = [c["code"] for c in seat_map.get("categories", ())]
        groups = free_runs(seat_map, size)
        random.shuffle(groups)
        self._groups = groups
        # The front rows: the first 20 seats of the map, free or not.
        self._front = [seat for seat, _, _ in zip(seats_of(seat_map), range(20), strict=False)]

    def take_group(self, user: FastHttpUser, size: int) -> list[str] | None:
        """A group of adjacent seats that were free at the last look, or None if sold out."""
        with self._lock:
            group = self._groups.pop() if self._groups else None
        if group is not None and len(group) == size:
            return group
        self._refresh(user, size)
        with self._lock:
            return self._groups.pop() if self._groups else None

    def front_seats(self, user: FastHttpUser) -> list[str]:
        if not self._front:
            self._refresh(user, 1)
        return self._front

    def category_names(self, user: FastHttpUser) -> list[str]:
        if not self.categories:
            self._refresh(user, 1)
        return self.categories or ["GENERAL"]


SALE = SaleState()


class Buyer(FastHttpUser):
    """A logged-in buyer (dev issuer). Each identity is fresh: the per-buyer limit is real."""

    abstract = True
    token: str = ""
    sub: str = ""

    def on_start(self) -> None:
        self.login()

    def login(self) -> None:
        self.sub = f"lt-{uuid.uuid4().hex[:16]}"
        with self.client.post(
            f"{API}/auth/dev-token",
            json={"sub": self.sub, "roles": ["buyer"]},
            name="auth/dev-token",
        ) as resp:
            self.token = resp.json()["access_token"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def report(self, kind: str, name: str, detail: str) -> None:
        """A failed check as a failure row of the summary.

        ``kind`` "BREACH" is a broken promise (a seat sold twice, a limit bypassed);
        "CHECK" is a slow or odd outcome that is not (an order still pending).
        """
        events.request.fire(
            request_type=kind,
            name=name,
            response_time=0,
            response_length=0,
            exception=AssertionError(detail),
            context={},
        )

    def buy(self, hold_id: str) -> None:
        """Place the order for a hold and poll it until it ends confirmed or rejected."""
        with self.client.post(
            f"{API}/orders",
            json={"hold_id": hold_id},
            headers={**self.auth, "Idempotency-Key": str(uuid.uuid4())},
            name="orders",
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"order answered {resp.status_code}")
                return
            order_id = resp.json()["order_id"]
        polls = int(os.environ.get("TB_LOADTEST_ORDER_POLLS", "20"))
        for _ in range(polls):
            self._sleep(0.5)
            with self.client.get(
                f"{API}/orders/{order_id}", headers=self.auth, name="orders/{id}"
            ) as resp:
                status = resp.json().get("status")
            if status in ("confirmed", "rejected"):
                return
        self.report("CHECK", "order still pending", f"order {order_id} after {polls} polls")

    def _sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

"""What every flash-sale scenario shares: the event on sale, its seats, a buyer's login.

Settings (environment, all optional):

- ``TB_LOADTEST_EVENT_ID``: the event on sale. Default: the seed's biggest event
  (found by ``TB_LOADTEST_EVENT_QUERY``, default "Libertadores").
- ``TB_LOADTEST_ORDER_POLLS``: how often a buyer polls its order (default 20, every 0.5 s).

The seat map is ``core.events.SeatMap``: sections -> rows -> runs of seats with one
status character per seat; a seat id is ``"<section>-<row>-<number>"``.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from locust import FastHttpUser, events

API = "/api/v1"
_FREE_RUN = re.compile("f+")  # "f" is a free seat in a row's status string


def seats_of(seat_map: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(seat_id, category, status_code)`` for every seat of a seat map, front first."""
    for section in seat_map.get("sections", ()):
        for run in section.get("rows", ()):
            first = int(run["first"])
            for offset, code in enumerate(run["status"]):
                seat = f"{section['code']}-{run['row']}-{first + offset}"
                yield seat, run["category"], code


def free_stretches(seat_map: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(row prefix, first number, length)`` of every run of adjacent free seats."""
    out: list[tuple[str, int, int]] = []
    for section in seat_map.get("sections", ()):
        for run in section.get("rows", ()):
            prefix = f"{section['code']}-{run['row']}-"
            first = int(run["first"])
            for m in _FREE_RUN.finditer(run["status"]):
                out.append((prefix, first + m.start(), m.end() - m.start()))
    return out


def carve(stretches: list[tuple[str, int, int]], size: int, limit: int) -> list[list[str]]:
    """Up to ``limit`` groups of ``size`` adjacent free seats, from random stretches."""
    order = list(range(len(stretches)))
    random.shuffle(order)
    groups: list[list[str]] = []
    for i in order:
        prefix, first, length = stretches[i]
        for start in range(0, length - size + 1, size):
            groups.append([f"{prefix}{first + start + k}" for k in range(size)])
            if len(groups) >= limit:
                return groups
    return groups


class SaleState:
    """Per-process view of the sale: the event id and shuffled pools of free seat groups.

    One look at the live seat map fills a pool per group size (the pools overlap: two
    buyers may go for the same seats, and one gets a 409, as in a real sale). A process
    looks again when a pool runs dry, at most once a second.
    """

    MAX_GROUP = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event_lock = threading.Lock()
        self.event_id: int | None = None
        self.categories: list[str] = []
        self._groups: dict[int, list[list[str]]] = {}
        self._front: list[str] = []
        self._looked_at = 0.0

    def event(self, user: FastHttpUser) -> int:
        if self.event_id is not None:
            return self.event_id
        with self._event_lock:  # one lookup per process, not one per user
            return self._find_event(user)

    def _find_event(self, user: FastHttpUser) -> int:
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

    def _refresh(self, user: FastHttpUser) -> None:
        if time.monotonic() - self._looked_at < 1.0 and self._front:
            return
        self._looked_at = time.monotonic()
        event_id = self.event(user)
        with user.client.get(f"{API}/events/{event_id}/seats", name="seat map") as resp:
            seat_map = resp.json()
        self.categories = [c["code"] for c in seat_map.get("categories", ())]
        stretches = free_stretches(seat_map)
        # A few thousand groups per size is plenty between two looks, and cheap to carve
        # (locust runs on gevent: CPU spent here stalls every user of the process).
        pools = {size: carve(stretches, size, 2000) for size in range(1, self.MAX_GROUP + 1)}
        with self._lock:
            self._groups = pools
        # The front rows: the first 20 seats of the map, free or not.
        self._front = [seat for seat, _, _ in itertools.islice(seats_of(seat_map), 20)]

    def _pop(self, size: int) -> list[str] | None:
        with self._lock:
            pool = self._groups.get(size)
            return pool.pop() if pool else None

    def take_group(self, user: FastHttpUser, size: int) -> list[str] | None:
        """A group of adjacent seats that were free at the last look, or None if sold out."""
        group = self._pop(size)
        if group is None:
            self._refresh(user)
            group = self._pop(size)
        return group

    def front_seats(self, user: FastHttpUser) -> list[str]:
        if not self._front:
            self._refresh(user)
        return self._front

    def category_names(self, user: FastHttpUser) -> list[str]:
        if not self.categories:
            self._refresh(user)
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

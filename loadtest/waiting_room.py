"""The waiting-room scenario: fans join a queued on-sale, wait, are admitted, hold, buy.

Its own locustfile (not in the default mix of loadtest/locustfile.py, since it needs a
queued event and the admitter running). Bounded and on loopback, e.g.:

    TB_LOADTEST_QUEUE_EVENT=<event id> uv run locust -f loadtest/waiting_room.py \\
        --headless -u 200 -r 50 -t 60s --host http://127.0.0.1:8000

Checks, reported as failure rows: a hold before admission must be refused (403
``admission_required``), and the position a fan sees must never go backwards. The
summary's ``queue/admitted`` rows count admissions; compare them with the event's rate.
"""

from __future__ import annotations

import os
import uuid

from locust import between, events, task

from loadtest.flash_sale import API, Buyer

EVENT = int(os.environ.get("TB_LOADTEST_QUEUE_EVENT", "0"))
CATEGORY = os.environ.get("TB_LOADTEST_QUEUE_CATEGORY", "GENERAL")
POLL_S = float(os.environ.get("TB_LOADTEST_QUEUE_POLL_S", "3"))


class WaitingRoomFan(Buyer):
    """One fan: join, poll the place, then hold and buy with the admission token."""

    wait_time = between(POLL_S, POLL_S * 1.5)
    admission: str | None = None
    last_position: int | None = None
    done = False

    def on_start(self) -> None:
        if not EVENT:
            raise SystemExit("set TB_LOADTEST_QUEUE_EVENT to a queued event's id")
        self.login()
        # Before admission a hold must be refused.
        with self.client.post(
            f"{API}/events/{EVENT}/holds",
            json={"quantity": 1, "category": CATEGORY},
            headers=self.auth,
            name="holds (before admission)",
            catch_response=True,
        ) as resp:
            if resp.status_code == 403:
                resp.success()
            else:
                resp.failure(f"a hold without admission answered {resp.status_code}")
                if resp.status_code == 201:
                    self.report("BREACH", "hold without admission", resp.text[:200])
        self.client.post(f"{API}/events/{EVENT}/queue", headers=self.auth, name="queue (join)")

    @task
    def wait_in_line(self) -> None:
        if self.done:
            return
        with self.client.get(
            f"{API}/events/{EVENT}/queue/position", headers=self.auth, name="queue/position"
        ) as resp:
            view = resp.json()
        if view["status"] == "sold_out":
            self.done = True
            return
        if view["status"] == "waiting":
            position = view.get("position")
            behind = self.last_position
            if position is not None and behind is not None and position > behind:
                self.report("BREACH", "queue went backwards", f"{behind} -> {position}")
            self.last_position = position
            return
        self.report_admitted()
        self.admission = view["admission"]
        self.hold_and_buy()
        self.done = True

    def report_admitted(self) -> None:
        events.request.fire(
            request_type="QUEUE",
            name="queue/admitted",
            response_time=0,
            response_length=0,
            exception=None,
            context={},
        )

    def hold_and_buy(self) -> None:
        with self.client.post(
            f"{API}/events/{EVENT}/holds",
            json={"quantity": 1, "category": CATEGORY, "admission": self.admission},
            headers=self.auth,
            name="holds (admitted)",
            catch_response=True,
        ) as resp:
            if resp.status_code == 409:
                resp.success()  # sold out meanwhile
                return
            if resp.status_code != 201:
                resp.failure(f"an admitted hold answered {resp.status_code}")
                return
            hold_id = resp.json()["hold_id"]
        with self.client.post(
            f"{API}/orders",
            json={"hold_id": hold_id, "admission": self.admission},
            headers={**self.auth, "Idempotency-Key": str(uuid.uuid4())},
            name="orders (admitted)",
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"an admitted order answered {resp.status_code}")

"""The waiting room on the real servers: the Redis Cluster queue scripts, the admitter,
the fairness log in PostgreSQL, and the API's join/position/admission over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from api.queue.repository import QueueRepository
from core.inventory import SINGLE_PARTITION, Inventory, partition_keys
from core.queue import (
    AdmissionClaims,
    QueueConfig,
    expected_order,
    new_seed,
    queue_keys,
    sign_admission,
    verify_log,
)
from core.settings import HoldSettings, Settings
from core.tickets import generate_private_key_pem, signing_key
from migrations.inventory import read_partition_plans, rebuild_inventory
from migrations.seed import SeedEvent, seed_event
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, restart_event_ids
from workers.admitter import Admitter, read_log

pytestmark = pytest.mark.slow


class Rooms:
    """Queued events in the session database, their inventory loaded; cleans Redis up."""

    def __init__(self, dsn: str, client: Any) -> None:
        self.dsn = dsn
        self.client = client
        self.made: list[int] = []

    async def add(
        self,
        *,
        sale_opens_in: timedelta,
        rate_per_min: int,
        joins_per_ip: int = 100,
        rate_auto: bool = False,
    ) -> int:
        now = datetime.now(UTC)
        event = SeedEvent(
            slug=f"queued-{now.timestamp():.0f}-{len(self.made)}-{id(self)}",
            title="Queued on-sale",
            category="CONCERT",
            venue="Test Hall",
            address="Loopback 1",
            starts_at=now + timedelta(days=30),
            base_price_minor=10_000,
            capacity=200,
        )
        seed, commit = new_seed()
        conn = await asyncpg.connect(self.dsn)
        try:
            event_id, _ = await seed_event(conn, event, now + sale_opens_in)
            await conn.execute(
                "UPDATE catalog.events SET status = 'published', sale_opens_at = $2 WHERE id = $1",
                event_id,
                now + sale_opens_in,
            )
            await conn.execute(
                "INSERT INTO queue.settings (event_id, queue_opens_at, rate_per_min,"
                " joins_per_ip, seed, seed_commitment, rate_auto)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                event_id,
                now - timedelta(hours=1),
                rate_per_min,
                joins_per_ip,
                seed,
                commit,
                rate_auto,
            )
            plans = await read_partition_plans(conn)
            inventory = Inventory(self.client, plans=lambda e: plans.get(e, SINGLE_PARTITION))
            await rebuild_inventory(conn, inventory, event_id)
        finally:
            await conn.close()
        self.made.append(event_id)
        return event_id

    async def drop(self) -> None:
        for event_id in self.made:
            for key in [*partition_keys(event_id, 0), *queue_keys(event_id)]:
                await self.client.delete(key)


@pytest.fixture
async def rooms(pg_dsn: str, services: dict[str, str]) -> AsyncIterator[Rooms]:
    await restart_event_ids(pg_dsn)
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    maker = Rooms(pg_dsn, client)
    try:
        yield maker
    finally:
        await maker.drop()
        await client.aclose()


@pytest.fixture
async def admitters(
    db_settings: Settings, pg_dsn: str, services: dict[str, str]
) -> AsyncIterator[tuple[Admitter, Admitter]]:
    """Two admitter processes' worth: each its own pool, cluster client and name. The
    pacing lease outlives any stall of a loaded test machine, so who paces is certain."""
    settings = with_overrides(db_settings, queue={"lease_ms": 120_000})
    made = []
    for name in ("admitter-a", "admitter-b"):
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
        await client.initialize()
        made.append((Admitter(settings, pool, client, name=name), pool, client))
    try:
        yield made[0][0], made[1][0]
    finally:
        for admitter, pool, client in made:
            admitter.close()
            await pool.close()
            await client.aclose()


async def config_of(pool: asyncpg.Pool, event_id: int) -> QueueConfig:
    config = await QueueRepository(pool).config(event_id)
    assert config is not None
    return config


async def until_open(config: QueueConfig) -> None:
    """Wait until the sale opened (waiting is fine; nothing asserts how long it took)."""
    while time.time() * 1000 < config.sale_opens_ms + 50:
        await asyncio.sleep(0.05)


async def test_pre_queue_is_drawn_from_the_seed_then_fifo_and_the_log_verifies(
    rooms: Rooms, admitters: tuple[Admitter, Admitter]
) -> None:
    admitter, _ = admitters
    event_id = await rooms.add(sale_opens_in=timedelta(seconds=2), rate_per_min=60_000)
    config = await config_of(admitter.pool, event_id)
    gateway = admitter.gateway
    early = [f"{i:016x}" for i in range(1, 61)]
    for pid in early:
        place = await gateway.join(config, pid, "ip-a")
        assert place.status == "waiting" and place.pre_queue
    # Nobody is admitted before the opening.
    assert (await admitter.admit(config)).outcome == "not_open"
    await until_open(config)
    late = [f"{i:016x}" for i in range(1001, 1011)]
    for pid in late:
        place = await gateway.join(config, pid, "ip-b")
        assert place.status == "waiting" and not place.pre_queue
    # Rejoining keeps the place (no second entry).
    again = await gateway.join(config, early[0], "ip-a")
    assert again.status == "waiting" and again.waiting == 70

    admitted: list[str] = []
    while len(admitted) < 70:
        outcome = await admitter.admit(config)
        assert outcome.outcome == "admitted"
        admitted += outcome.admitted
        await asyncio.sleep(0.01)
    order = expected_order(
        [
            msgspec.convert(
                {"seq": 0, "at": 0, "kind": "join", "prev": "", "hash": "", "pid": p, "pre": True},
                type=_Entry,
            )
            for p in early
        ],
        config.seed,
    )
    assert admitted[:60] == order  # the seeded draw
    assert admitted[:60] != early  # ... which is not the arrival order
    assert admitted[60:] == late  # FIFO after the opening

    while await admitter.copy_log(event_id):
        pass
    entries = await read_log(admitter.pool, event_id)
    kinds = [e.kind for e in entries]
    assert kinds[0] == "commit" and kinds.count("join") == 70 and kinds.count("admit") == 70
    assert "reveal" in kinds and kinds.index("reveal") > kinds.index("commit")
    verdict = verify_log(entries)
    assert verdict.ok, verdict.problems

    # The CLI's check on the stored log, and a tampered entry in the database fails it.
    from workers.admitter import verify_fairness

    assert (await verify_fairness(admitter.settings, event_id)).ok
    async with admitter.pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError):  # append-only
            await conn.execute(
                "UPDATE queue.fairness_log SET body = body WHERE event_id = $1", event_id
            )
        await conn.execute("ALTER TABLE queue.fairness_log DISABLE TRIGGER USER")
        try:
            target = next(e for e in entries if e.kind == "admit")
            await conn.execute(
                "UPDATE queue.fairness_log SET body = replace(body, $3, $4)"
                " WHERE event_id = $1 AND seq = $2",
                event_id,
                target.seq,
                target.pid,
                late[-1],
            )
        finally:
            await conn.execute("ALTER TABLE queue.fairness_log ENABLE TRIGGER USER")
    tampered = await verify_fairness(admitter.settings, event_id)
    assert not tampered.ok
    assert any(f"entry {target.seq}: hash" in p for p in tampered.problems), tampered.problems


class _Entry(msgspec.Struct):
    seq: int
    at: int
    kind: str
    prev: str
    hash: str
    pid: str
    pre: bool


async def test_admission_never_passes_the_rate_and_two_admitters_never_admit_twice(
    rooms: Rooms, admitters: tuple[Admitter, Admitter]
) -> None:
    a, b = admitters
    event_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=120)
    config = await config_of(a.pool, event_id)
    pids = [f"{i:016x}" for i in range(1, 201)]
    for pid in pids:
        await a.gateway.join(config, pid, f"ip-{pid}")

    async def passes(admitter: Admitter) -> list[Any]:
        out = []
        for _ in range(15):
            out.append(await admitter.admit(config))
            await asyncio.sleep(0.1)
        return out

    outcomes_a, outcomes_b = await asyncio.gather(passes(a), passes(b))
    # One pacer: the other admitter is refused every pass while the lease is held.
    refused = [o for o in (*outcomes_a, *outcomes_b) if o.outcome == "not_pacer"]
    assert len(refused) == 15
    admitted = [pid for o in (*outcomes_a, *outcomes_b) for pid in o.admitted]
    assert len(admitted) == len(set(admitted)) > 0
    assert admitted == pids[: len(admitted)]  # FIFO, nobody skipped
    while await a.copy_log(event_id):
        pass
    entries = await read_log(a.pool, event_id)
    admits = [e for e in entries if e.kind == "admit"]
    assert [e.pid for e in admits] == admitted
    # Never above the rate (2/s, one second's worth at once), counted on Redis's clock.
    opened = next(e.at for e in entries if e.kind == "open")
    for n, e in enumerate(admits, start=1):
        assert n <= 2 + 120 * (e.at - opened) / 60_000, (n, e.at - opened)
    assert len(admitted) < 200  # the queue was not drained at once
    assert verify_log(entries).ok


async def test_sold_out_closes_the_queue_and_returned_seats_resume_it(
    rooms: Rooms, admitters: tuple[Admitter, Admitter], db_settings: Settings
) -> None:
    a, _ = admitters
    event_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=6000)
    config = await config_of(a.pool, event_id)
    for pid in ("a" * 16, "b" * 16):
        await a.gateway.join(config, pid, "ip")
    # Somebody holds every seat.
    whale = Inventory(
        rooms.client,
        HoldSettings(max_seats_per_buyer=200, max_seats_per_hold=200, attempts_per_minute=0),
    )
    async with a.pool.acquire() as conn:
        seats = [
            r["seat_id"]
            for r in await conn.fetch(
                "SELECT seat_id FROM catalog.seats WHERE event_id = $1", event_id
            )
        ]
    hold = await whale.hold(event_id, seats, "whale")
    try:
        outcome = await a.admit(config)
        assert outcome.outcome == "sold_out" and outcome.waiting == 2
        status = await a.gateway.status(event_id, "a" * 16)
        assert status is not None and status.state == "sold_out"
        from core.queue import QueueSoldOut

        with pytest.raises(QueueSoldOut):
            await a.gateway.join(config, "c" * 16, "ip")
        await whale.release(hold.hold_id, "whale")
        # Admission resumes with the next passes, with the fans who waited, in order.
        admitted: list[str] = []
        for _ in range(100):
            outcome = await a.admit(config)
            assert outcome.outcome == "admitted"
            admitted += outcome.admitted
            if admitted:
                break
            await asyncio.sleep(0.02)
        assert admitted[0] == "a" * 16
    finally:
        whale.close()
    while await a.copy_log(event_id):
        pass
    kinds = [e.kind for e in await read_log(a.pool, event_id)]
    assert kinds.index("sold_out") < kinds.index("resume") < kinds.index("admit")


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/{code}"), body
    return body


async def test_holds_and_orders_need_the_fans_admission(
    rooms: Rooms, admitters: tuple[Admitter, Admitter], db_settings: Settings
) -> None:
    a, _ = admitters
    event_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=6000)
    other_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=6000)
    settings = with_overrides(db_settings, api={"rate_limit_enabled": False})
    async with api_client(settings) as http, api_client(settings) as replica:

        async def token(client: Any, sub: str, roles: list[str] | None = None) -> dict[str, str]:
            body: dict[str, Any] = {"sub": sub}
            if roles is not None:
                body["roles"] = roles
            r = await client.post("/api/v1/auth/dev-token", json=body)
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        run = uuid.uuid4().hex[:8]
        ana_sub = f"ana-queue-{run}"
        ana = await token(http, ana_sub)
        async with a.pool.acquire() as conn:
            seat_id = await conn.fetchval(
                "SELECT seat_id FROM catalog.seats WHERE event_id = $1 ORDER BY seat_id LIMIT 1",
                event_id,
            )
        seats = {"seats": [seat_id]}

        # Without joining: 403 admission_required, on both ways in.
        no = await http.post(f"/api/v1/events/{event_id}/holds", json=seats, headers=ana)
        _problem(no, 403, "admission_required")

        # Join; again (on another replica): the same place.
        joined = await http.post(f"/api/v1/events/{event_id}/queue", headers=ana)
        assert joined.status_code == 200, joined.text
        assert joined.json()["status"] == "waiting" and joined.json()["position"] == 1
        again = await replica.post(f"/api/v1/events/{event_id}/queue", headers=ana)
        assert again.json() == joined.json()
        info = (await http.get(f"/api/v1/events/{event_id}/queue")).json()
        assert info["waiting"] == 1 and info["state"] == "open" and info["seed"]

        outcome = await a.admit(await config_of(a.pool, event_id))
        assert outcome.admitted  # ana
        pos = await replica.get(f"/api/v1/events/{event_id}/queue/position", headers=ana)
        assert pos.status_code == 200, pos.text
        view = pos.json()
        assert view["status"] == "admitted" and view["admission"]
        admission = view["admission"]

        # A forged token (right claims, another key), another event's, another fan's.
        forged = sign_admission(
            AdmissionClaims(
                iss="ticketbuster",
                aud="admission",
                sub=ana_sub,
                event=event_id,
                pid="x",
                iat=int(time.time()),
                exp=int(time.time()) + 600,
                max_holds=2,
                max_seats=6,
            ),
            signing_key(generate_private_key_pem()),
        )
        for bad_token in (forged, "not-a-token"):
            r = await http.post(
                f"/api/v1/events/{event_id}/holds",
                json={**seats, "admission": bad_token},
                headers=ana,
            )
            _problem(r, 403, "admission_required")
        r = await http.post(
            f"/api/v1/events/{other_id}/holds", json={**seats, "admission": admission}, headers=ana
        )
        assert "event" in _problem(r, 403, "admission_required")["detail"]
        ben = await token(http, f"ben-queue-{run}")
        r = await http.post(
            f"/api/v1/events/{event_id}/holds", json={**seats, "admission": admission}, headers=ben
        )
        assert "another fan" in _problem(r, 403, "admission_required")["detail"]

        held = await http.post(
            f"/api/v1/events/{event_id}/holds", json={**seats, "admission": admission}, headers=ana
        )
        assert held.status_code == 201, held.text
        hold_id = held.json()["hold_id"]
        no_order = await http.post(
            "/api/v1/orders",
            json={"hold_id": hold_id},
            headers={**ana, "Idempotency-Key": f"k1-{run}"},
        )
        _problem(no_order, 403, "admission_required")
        order = await http.post(
            "/api/v1/orders",
            json={"hold_id": hold_id, "admission": admission},
            headers={**ana, "Idempotency-Key": f"k2-{run}"},
        )
        assert order.status_code == 202, order.text

        # The hold is in the event's fairness log, after the admission, and the log verifies.
        while await a.copy_log(event_id):
            pass
        entries = await read_log(a.pool, event_id)
        kinds = [e.kind for e in entries]
        held = [e for e in entries if e.kind == "hold"]
        assert [(e.ref, e.seats) for e in held] == [(hold_id, 1)]
        assert kinds.index("admit") < kinds.index("hold")
        assert verify_log(entries).ok

        # An event without a waiting room is served as before (no token needed).
        jwks = await http.get("/api/v1/queue/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"][0]["crv"] == "Ed25519"


class _Outbox:
    def __init__(self) -> None:
        self.frames: list[Any] = []

    def put(self, frame: Any) -> bool:
        self.frames.append(frame)
        return True


class _Session:
    def __init__(self, sub: str) -> None:
        self.sub = sub
        self.outbox = _Outbox()


async def test_positions_are_pushed_in_coalesced_rounds_not_per_fan_calls(
    rooms: Rooms, admitters: tuple[Admitter, Admitter], db_settings: Settings
) -> None:
    from api.live.queue_push import QueuePush
    from api.queue.service import QueueService

    a, _ = admitters
    event_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=600)
    config = await config_of(a.pool, event_id)
    service = QueueService(db_settings, QueueRepository(a.pool), a.gateway)
    push = QueuePush(lambda: service)
    sessions = [_Session(f"fan-{i}") for i in range(40)]
    for s in sessions:
        await service.join(s.sub, event_id, "ip")
    for s in sessions:
        await push.watch(s, event_id)
    assert [s.outbox.frames[0].position for s in sessions] == list(range(1, 41))

    # A round with nothing new: one Redis call for all 40 fans, no frame.
    push.redis_calls = 0
    await push.tick(event_id)
    assert push.redis_calls == 1 and all(len(s.outbox.frames) == 1 for s in sessions)

    admitted: list[str] = []
    while len(admitted) < 3:
        admitted += (await a.admit(config)).admitted
        await asyncio.sleep(0.05)
    push.redis_calls = 0
    await push.tick(event_id)
    n = len(admitted)
    # One call for the queue, one per fan whose number came up (to sign their admission).
    assert push.redis_calls == 1 + n
    for s in sessions[:n]:
        last = s.outbox.frames[-1]
        assert last.status == "admitted" and last.admission
        service.require_admission(last.admission, s.sub, event_id)
    for i, s in enumerate(sessions[n:], start=1):
        last = s.outbox.frames[-1]
        assert last.status == "waiting" and last.position == i
    # The position pushed equals the one a poll answers.
    polled = await service.position(sessions[-1].sub, event_id)
    assert polled.position == sessions[-1].outbox.frames[-1].position == 40 - n


async def test_the_user_channel_pushes_the_place_and_the_admission(
    rooms: Rooms, admitters: tuple[Admitter, Admitter], db_settings: Settings, tmp_path: Any
) -> None:
    """Over a real API process and WebSocket: ``watch_queue`` answers the place, and the
    admission arrives pushed (no polling) once the admitter lets the fan in."""
    import httpx
    import websockets

    from core.live import QueueUpdate, UserServerFrame
    from tests.integration.api_servers import granian_server

    a, _ = admitters
    event_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=600)
    decoder = msgspec.json.Decoder(UserServerFrame)
    sub = f"ws-fan-{uuid.uuid4().hex[:8]}"
    with granian_server(db_settings, tmp_path / "api.log") as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=20) as http:
            r = await http.post("/api/v1/auth/dev-token", json={"sub": sub})
            token = r.json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            for other in range(3):  # three fans ahead
                t = await http.post("/api/v1/auth/dev-token", json={"sub": f"{sub}-{other}"})
                h = {"Authorization": f"Bearer {t.json()['access_token']}"}
                assert (await http.post(f"/api/v1/events/{event_id}/queue", headers=h)).is_success
            joined = await http.post(f"/api/v1/events/{event_id}/queue", headers=auth)
            assert joined.json()["position"] == 4
        url = api.base_url.replace("http", "ws") + f"/api/v1/me/live?token={token}"
        async with websockets.connect(url) as ws:

            async def frame() -> Any:
                async with asyncio.timeout(20):
                    while True:
                        got = decoder.decode(await ws.recv())
                        if type(got).__name__ == "Ping":
                            await ws.send('{"type":"pong"}')
                            continue
                        if type(got).__name__ != "UserHello":
                            return got

            await ws.send(msgspec.json.encode({"type": "watch_queue", "event_id": event_id}))
            first = await frame()
            assert isinstance(first, QueueUpdate) and first.position == 4
            config = await config_of(a.pool, event_id)
            admitted: list[str] = []
            while len(admitted) < 4:
                admitted += (await a.admit(config)).admitted
                await asyncio.sleep(0.05)
            seen = [first]
            while seen[-1].status != "admitted":
                seen.append(await frame())
            assert seen[-1].admission and seen[-1].admission_expires_at
            positions = [f.position for f in seen if f.status == "waiting"]
            assert positions == sorted(positions, reverse=True)  # only ever forward


async def test_joining_can_require_a_proof_of_work(rooms: Rooms, db_settings: Settings) -> None:
    from core.queue import pow_solves

    event_id = await rooms.add(sale_opens_in=timedelta(seconds=-1), rate_per_min=600)
    settings = with_overrides(
        db_settings, api={"rate_limit_enabled": False}, queue={"pow_bits": 10}
    )
    sub = f"pow-fan-{uuid.uuid4().hex[:8]}"
    async with api_client(settings) as http:
        r = await http.post("/api/v1/auth/dev-token", json={"sub": sub})
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        refused = _problem(
            await http.post(f"/api/v1/events/{event_id}/queue", headers=auth),
            403,
            "proof_of_work_required",
        )
        info = (await http.get(f"/api/v1/events/{event_id}/queue")).json()
        assert info["pow_bits"] == 10 and info["pow_challenge"] == refused["challenge"]
        challenge = info["pow_challenge"]
        nonce = next(str(n) for n in range(1_000_000) if pow_solves(challenge, sub, str(n), 10))
        wrong = next(str(n) for n in range(1_000) if not pow_solves(challenge, sub, str(n), 10))
        bad = await http.post(
            f"/api/v1/events/{event_id}/queue",
            headers={**auth, "Proof-Of-Work": f"{challenge}:{wrong}"},
        )
        _problem(bad, 403, "proof_of_work_required")
        ok = await http.post(
            f"/api/v1/events/{event_id}/queue",
            headers={**auth, "Proof-Of-Work": f"{challenge}:{nonce}"},
        )
        assert ok.status_code == 200 and ok.json()["position"] == 1


async def test_auto_rate_admits_no_more_shoppers_than_the_seats_left_can_serve(
    rooms: Rooms, admitters: tuple[Admitter, Admitter]
) -> None:
    from core.queue import shoppers_cap

    a, _ = admitters
    # A ceiling far above what 200 seats can serve: the auto rate holds admissions back.
    event_id = await rooms.add(
        sale_opens_in=timedelta(seconds=-1), rate_per_min=600_000, rate_auto=True
    )
    config = await config_of(a.pool, event_id)
    assert config.rate_auto
    for i in range(120):
        await a.gateway.join(config, f"{i:016x}", f"ip-{i}")
    cap = shoppers_cap(200, a.settings.holds.max_seats_per_buyer)
    admitted: list[str] = []
    for _ in range(30):
        outcome = await a.admit(config)
        assert outcome.outcome == "admitted"
        admitted += outcome.admitted
        await asyncio.sleep(0.02)
    assert len(admitted) == cap < 120  # every pass after the cap admitted nobody
    while await a.copy_log(event_id):
        pass
    assert verify_log(await read_log(a.pool, event_id)).ok

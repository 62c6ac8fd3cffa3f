"""Every Lua script loads into the real cluster, has a wrapper, and stays in one slot."""

from __future__ import annotations

import hashlib
import inspect
import re
import uuid
from collections import Counter

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from core import inventory as inventory_module
from core.inventory import (
    LUA_DIR,
    SCRIPT_NAMES,
    Inventory,
    partition_keys,
    script_source,
)
from core.settings import HoldSettings
from tests.conftest import fresh_event_id


def lua_files() -> list[str]:
    return sorted(p.stem for p in LUA_DIR.glob("*.lua"))


def test_time_comes_from_redis() -> None:
    prelude = (LUA_DIR / "lib" / "prelude.lua").read_text()
    assert "redis.call('TIME')" in prelude
    for name in SCRIPT_NAMES:
        text = (LUA_DIR / f"{name}.lua").read_text()
        argv = next(line for line in text.splitlines() if line.startswith("-- ARGV:"))
        # Never the client's clock: no "now" or timestamp argument.
        assert not re.search(r"\bnow|\btime\b|_at\b|timestamp", argv), name
        assert "os.time" not in text


# Scripts of the API's rate limiter (api/ratelimit.py) and order intake
# (api/orders/service.py), not of the inventory.
API_SCRIPTS = ("order_claim", "order_pending", "order_settle", "ratelimit")
# The waiting room's scripts (core/queue.py, prelude lua/lib/queue.lua).
QUEUE_SCRIPTS = ("queue_admit", "queue_join", "queue_position")
# The workers' own scripts: the notifier's once-per-outcome append (workers/notifier.py).
WORKER_SCRIPTS = ("notify",)


def test_every_lua_file_is_a_known_script_with_a_header() -> None:
    assert lua_files() == sorted((*SCRIPT_NAMES, *API_SCRIPTS, *QUEUE_SCRIPTS, *WORKER_SCRIPTS))
    for name in lua_files():
        text = (LUA_DIR / f"{name}.lua").read_text()
        assert text.startswith(f"-- {name}.lua: "), name
        for part in ("-- KEYS:", "-- ARGV:", "-- Returns:", "-- luacheck: globals KEYS ARGV redis"):
            assert part in text, (name, part)
        # Keys come only from KEYS: no key name is assembled in the script.
        assert "{ev:" not in text, name


def test_every_script_has_a_wrapper_method() -> None:
    source = inspect.getsource(inventory_module.Inventory)
    called = set(re.findall(r'(?:_run|_code|_order_op)\(\s*"(\w+)"', source))
    assert called == set(SCRIPT_NAMES)
    from api import ratelimit

    assert (LUA_DIR / "ratelimit.lua").read_text(encoding="utf-8") == ratelimit.SCRIPT
    from core import queue

    queue_source = inspect.getsource(queue)
    assert set(re.findall(r'_script\("(\w+)"\)', queue_source)) == set(QUEUE_SCRIPTS)
    for name in ("JOIN", "POSITION", "ADMIT"):
        assert re.search(rf"\(\s*{name},", inspect.getsource(queue.QueueGateway)), name
    from workers import notifier

    assert notifier.NOTIFY.source == (LUA_DIR / "notify.lua").read_bytes()


async def test_every_script_loads_on_every_primary(redis_cluster: RedisCluster) -> None:
    primaries = redis_cluster.get_primaries()
    assert len(primaries) == 3
    for name in SCRIPT_NAMES:
        text = script_source(name)
        sha = await redis_cluster.script_load(text)
        assert sha == hashlib.sha1(text.encode()).hexdigest()
        for node in primaries:
            exists = await redis_cluster.execute_command("SCRIPT EXISTS", sha, target_nodes=node)
            assert exists in ([1], [True], True), (name, node.name)


async def test_scripts_reload_after_the_script_cache_is_flushed(
    redis_cluster: RedisCluster,
) -> None:
    inventory = Inventory(redis_cluster, HoldSettings())
    event = fresh_event_id()
    await inventory.load(event, 0, [("1-A-1", "VIP")])
    await redis_cluster.script_flush()  # what a restart or failover does
    hold = await inventory.hold(event, ["1-A-1"], "alice")
    assert hold.seats == ["1-A-1"]


async def test_partition_keys_share_one_slot_and_events_spread_over_primaries(
    redis_cluster: RedisCluster,
) -> None:
    nodes: Counter[str] = Counter()
    for _ in range(60):
        event = fresh_event_id()
        keys = partition_keys(event, 0)
        slots = {await redis_cluster.cluster_keyslot(k) for k in keys}
        assert len(slots) == 1
        nodes[redis_cluster.get_node_from_key(keys[0]).name] += 1
    print("events per primary:", dict(nodes))
    assert len(nodes) == 3
    assert min(nodes.values()) >= 5  # 60 events, no primary left idle


async def test_every_operation_runs_on_every_primary_without_crossslot(
    redis_cluster: RedisCluster,
) -> None:
    inventory = Inventory(redis_cluster, HoldSettings(ttl_s=60))
    seen: set[str] = set()
    while len(seen) < 3:
        event = fresh_event_id()
        node = redis_cluster.get_node_from_key(partition_keys(event, 0)[0]).name
        if node in seen:
            continue
        seen.add(node)
        await inventory.load(event, 0, [(f"1-A-{n}", "VIP") for n in range(1, 6)])
        hold = await inventory.hold(event, ["1-A-1"], "alice")
        best = await inventory.hold_best(event, "VIP", 2, "bob")
        await inventory.get_hold(hold.hold_id, "alice")
        await inventory.extend(hold.hold_id, "alice")
        placed = await inventory.confirm(hold.hold_id, "alice", str(uuid.uuid4()))
        await inventory.revert(event, 0, placed.order_id)
        placed = await inventory.confirm(hold.hold_id, "alice", str(uuid.uuid4()))
        await inventory.mark_sold(event, 0, placed.order_id)
        other = await inventory.confirm(best.hold_id, "bob", str(uuid.uuid4()))
        await inventory.reject(event, 0, other.order_id)
        third = await inventory.hold(event, ["1-A-5"], "carol")
        await inventory.release(third.hold_id, "carol")
        await inventory.sweep(event, 0)
        await inventory.seat_statuses(event)
        await inventory.availability(event)
        await inventory.buyer_usage(event, "alice")
        await inventory.read_deltas(event, 0, "0-0")


async def test_keys_of_two_partitions_would_be_refused_crossslot(
    redis_cluster: RedisCluster,
) -> None:
    # The guard rail the hash tag gives us: a script over two slots is refused.
    event = fresh_event_id()
    a, b = partition_keys(event, 0)[0], partition_keys(event, 1)[0]
    if await redis_cluster.cluster_keyslot(a) == await redis_cluster.cluster_keyslot(b):
        pytest.skip("both partitions hash to one slot")
    node = redis_cluster.get_node_from_key(a)
    with pytest.raises(ResponseError, match="same slot"):
        await redis_cluster.execute_command(
            "EVAL", "return redis.call('GET', KEYS[2])", 2, a, b, target_nodes=node
        )

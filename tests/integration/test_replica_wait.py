"""``TB_REDIS_CONFIRM_WAIT_MS`` on the script link (docs/decisions/0806): a script marked
``replicated`` is followed by ``WAIT 1 <ms>`` on its primary, and every caller still gets
its own reply when replicated and plain calls share the pipelined connection."""

from __future__ import annotations

import asyncio
import secrets

from core import devservices
from core.inventory_link import Route, Script, ScriptLink, key_slot

ECHO = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[1]) return ARGV[1]"


def _primary_port(seeds: list[tuple[str, int]], slot: int) -> int:
    nodes = devservices._redis_cli(seeds[0][1], "cluster", "nodes")
    for line in nodes.splitlines():
        parts = line.split()
        if "master" not in parts[2]:
            continue
        for rng in parts[8:]:
            lo, _, hi = rng.partition("-")
            if not rng.startswith("[") and int(lo) <= slot <= int(hi or lo):
                return int(parts[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no primary for slot {slot}")


def _waits(port: int) -> int:
    stats = devservices._redis_cli(port, "info", "commandstats")
    for line in stats.splitlines():
        if line.startswith("cmdstat_wait:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def _calls(link: ScriptLink, route: Route, n: int) -> list[tuple[str, bytes]]:
    replicated, plain = Script(ECHO, replicated=True), Script(ECHO)
    expected = [f"{'r' if i % 2 else 'p'}{i}" for i in range(n)]
    replies = await asyncio.gather(
        *(link.run(replicated if name[0] == "r" else plain, route, (name,)) for name in expected)
    )
    return list(zip(expected, replies, strict=True))


async def test_replicated_scripts_wait_for_a_replica_and_replies_stay_in_step(
    services: dict[str, str],
) -> None:
    seeds = [
        (h, int(p))
        for h, _, p in (n.rpartition(":") for n in services["TB_REDIS_CLUSTER_NODES"].split(","))
    ]
    route = Route([f"{{replica-wait-{secrets.token_hex(4)}}}:h"])
    port = _primary_port(seeds, key_slot(route.keys[0]))

    for wait_ms, sent in ((0, 0), (200, 50)):
        link = ScriptLink(seeds, replica_wait_ms=wait_ms)
        try:
            before = _waits(port)
            pairs = await _calls(link, route, 100)
            after = _waits(port)
        finally:
            link.close()
        # Each caller got its own script's reply, not a WAIT's or a neighbour's.
        assert all(reply == name.encode() for name, reply in pairs)
        assert after - before == sent
        assert link.unreplicated == 0  # the dev cluster's replicas acknowledge in time

    cleanup = ScriptLink(seeds)
    try:
        await cleanup.run(Script("return redis.call('DEL', KEYS[1])"), route, ())
    finally:
        cleanup.close()

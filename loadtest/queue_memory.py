"""Bytes per waiting fan: N fans join one waiting room on a throwaway Redis.

Starts its own ``redis-server`` (standalone, no persistence) on ``--port``, runs the real
``lua/queue_join.lua`` N times (pipelined), then reads ``MEMORY USAGE`` of the queue's
keys and the server's ``used_memory``. Not a test: a measurement for
docs/decisions/1001-waiting-room.md.

    uv run python -m loadtest.queue_memory --fans 1000000 --port 7300
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time

import redis

from core.queue import JOIN, new_seed, pseudonym, queue_keys


def measure(fans: int, port: int, batch: int = 5000) -> dict[str, float]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            sha = client.script_load(JOIN.source)
            keys = queue_keys(1)
            seed, commit = new_seed()
            now = int(time.time() * 1000)
            # Sale opens in an hour: every join is a pre-queue join (the costlier score).
            config = (seed, commit, now - 1000, now + 3_600_000, now + 7_200_000, 1000, 20, 900_000)
            before = int(client.info("memory")["used_memory"])
            for start in range(0, fans, batch):
                pipe = client.pipeline(transaction=False)
                for i in range(start, min(fans, start + batch)):
                    pid = pseudonym(b"bench", 1, f"fan-{i}")
                    pipe.evalsha(sha, len(keys), *keys, pid, f"{i:016x}", *config)
                pipe.execute()
            wait = int(client.zcard(keys[1]))
            names = ("meta", "wait", "admitted", "ips", "log")
            usage = {n: int(client.memory_usage(k) or 0) for n, k in zip(names, keys, strict=False)}
            after = int(client.info("memory")["used_memory"])
        finally:
            server.terminate()
            server.wait(10)
    return {
        "fans": wait,
        "wait_bytes_per_fan": usage["wait"] / wait,
        "ip_bytes_per_fan": usage["ips"] / wait,
        "log_bytes_per_fan": usage["log"] / wait,
        "used_memory_bytes_per_fan": (after - before) / wait,
        "used_memory_mib": (after - before) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fans", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=7300)
    args = parser.parse_args()
    for name, value in measure(args.fans, args.port).items():
        print(f"{name}: {value:.1f}")


if __name__ == "__main__":
    main()

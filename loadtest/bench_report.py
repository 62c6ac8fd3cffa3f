"""Writes docs/BENCHMARKS.md from one run of ``loadtest.bench``.

Every figure comes from the run's results. The hand-written reading of the figures
lives between the ``notes`` markers and is carried over from the previous file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtest.bench import HttpRun, Results

NOTES_START = "<!-- notes:start (hand-written, kept by make bench) -->"
NOTES_END = "<!-- notes:end -->"
DEFAULT_NOTES = "_No reading written yet._"

# The figures before the flash-sale speed work (issue 17), as measured then: the make bench
# run of 2026-11-28 08:52 UTC (docs/BENCHMARKS.md at that date) and, for 2 workers, the
# issue's own wrk runs on the same kind of box. Shown beside this run's, never mixed in.
BEFORE: dict[str, str] = {
    "new_share": "10% (844 vs 8,850/s)",
    "new_cpu": "11.4x (1,125 vs 99 µs)",
    "returning_share": "13% (1,111/s)",
    "returning_cpu": "9.8x (974 µs)",
    "workers_new": "1,299-1,534/s",
    "workers_hot": "not measured (1 worker: 921/s)",
    "half_p99": "29.85 ms (1 worker)",
    "orders": "not measured alone",
    "sellout": "43.9 s (1 worker)",
    "persister": "9,716 tickets/s",
}


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None, digits: int = 1) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.{digits}f}x"


def _pct(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    return f"{100 * a / b:.0f}%"


def _met(ok: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[ok]


def _old_notes(out: Path) -> str:
    if not out.exists():
        return DEFAULT_NOTES
    text = out.read_text()
    m = re.search(re.escape(NOTES_START) + r"\n(.*?)\n" + re.escape(NOTES_END), text, re.S)
    return m.group(1).strip() if m else DEFAULT_NOTES


def _hold_row(label: str, run: HttpRun | None, ref: float | None, ok: str = "201") -> str:
    if run is None:
        return f"| {label} | not run | | | | | | | |"
    other = {k: v for k, v in run.statuses.items() if k != ok}
    odd = f" ({', '.join(f'{v:,} x {k}' for k, v in sorted(other.items()))})" if other else ""
    per_request = 1e6 * run.server_cpu_s / run.requests if run.requests else 0
    return (
        f"| {label} | {_n(run.ok_per_s(ok))}{odd} | {_n(run.rps)} | {run.p50_ms:.2f} | "
        f"{run.p99_ms:.2f} | {run.server_cpu_pct:.0f}% | {per_request:,.0f} µs | "
        f"{run.generator_cpu_pct:.0f}% | {_ratio(ref, run.ok_per_s(ok), 2) if ref else '—'} |"
    )


def write_report(results: Results, out: Path) -> None:
    c = results.config
    lines: list[str] = []
    add = lines.append
    tb = results.holds.get("ticketbuster", {})
    naive = results.holds.get("naive", {})
    empty = results.holds.get("empty", {})
    tb_peak = tb.get("peak")
    tb_rate = tb_peak.ok_per_s() if tb_peak else None
    back_rate = tb["returning"].ok_per_s() if "returning" in tb else None
    naive_rate = naive["peak"].ok_per_s() if "peak" in naive else None
    empty_rate = empty["peak"].ok_per_s() if "peak" in empty else None

    add("# Benchmarks")
    add("")
    add(
        f"Written by `make bench` (`uv run python -m loadtest.bench`"
        f"{' --quick' if c.duration_s < 10 else ''}) on {results.started}; the run took "
        f"{results.elapsed_s:.0f} s. Every figure below was measured in that one run, on the "
        "machine below, with the load generator on the same 2 cores. Nothing here is typed "
        "by hand except the section *Reading the figures*, which `make bench` keeps."
    )
    add("")
    add("## How to run")
    add("")
    add("```")
    add("make bench                                   # uv run python -m loadtest.bench: all of it")
    add("uv run python -m loadtest.bench --quick      # short runs, an 8,000-seat sell-out")
    add("uv run python -m loadtest.bench --only sellout,persister   # some steps, file untouched")
    add("make loadtest                                # locust flash sale against make dev")
    add("uv run python -m loadtest.hold_path_ab CLONE # CPU per hold: this tree vs a patched clone")
    add("```")
    add("")
    add(
        "The harness needs `wrk` (installed with apt when run as root), `redis-server` / "
        "`redis-benchmark` and `pgbench` (with the servers), and `py-spy` (a dev dependency). "
        "It works in its own database (`<db>_bench`, dropped at the end), under event ids far "
        "above the dev ones, with its own Kafka topic prefix, and stops by itself."
    )
    add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    for key, value in results.machine.items():
        add(f"| {key} | {value} |")
    add("")
    for note in results.notes:
        add(f"> {note}")
    for name, reason in results.skipped.items():
        add(f"> Step `{name}` failed in this run and has no figures: {reason}")
    if results.notes or results.skipped:
        add("")

    # -- headline and targets
    sell = results.sellout
    per = results.persister
    full = results.holds.get("ticketbuster_2w", {})
    orders = results.orders
    empty_cpu = (
        empty["peak"].server_cpu_s / empty["peak"].requests
        if "peak" in empty and empty["peak"].requests
        else None
    )

    def cpu_x(run: HttpRun | None) -> float | None:
        if run is None or not run.requests or not empty_cpu:
            return None
        return run.server_cpu_s / run.requests / empty_cpu

    new_cpu, back_cpu = cpu_x(tb_peak), cpu_x(tb.get("returning"))
    new_share = (tb_rate / empty_rate) if tb_rate and empty_rate else None
    back_share = (back_rate / empty_rate) if back_rate and empty_rate else None
    add(
        "**Headline** (1 worker each, 64 connections, this run): a hold by a new buyer runs at "
        f"**{_pct(tb_rate, empty_rate)}** of the empty endpoint's rate and costs "
        f"**{_n(new_cpu, 1)}** empty requests of server CPU; a returning buyer's at "
        f"**{_pct(back_rate, empty_rate)}**, **{_n(back_cpu, 1)}** empty requests."
    )
    add("")
    full_peak, full_half, full_hot = full.get("peak"), full.get("half"), full.get("hot")
    full_rate = full_peak.ok_per_s() if full_peak else None
    hot_rate = full_hot.rps if full_hot else None
    half_p99 = full_half.p99_ms if full_half else None
    order_rate = orders.ok_per_s("202") if orders else None
    in_pg = sell.in_postgres_s if sell else None
    oversold = sell.oversold if sell else None
    decided_all = sell.missing_orders == 0 if sell else None
    best_tps = per.worker_steady_tps if per else None
    add("## Targets (issue 17, flash-sale speed)")
    add("")
    add("| target | goal | before this work | this run | |")
    add("|---|---|---|---|---|")

    def row(target: str, goal: str, before: str, now: str, ok: bool | None) -> None:
        add(f"| {target} | {goal} | {before} | {now} | {_met(ok)} |")

    row(
        "returning buyers, 1 worker: holds/s ÷ empty req/s", "≥ 33%",
        BEFORE["returning_share"], _pct(back_rate, empty_rate),
        None if back_share is None else back_share >= 0.33,
    )  # fmt: skip
    row(
        "returning buyers: CPU per hold ÷ CPU per empty request", "≤ 3x",
        BEFORE["returning_cpu"], f"{_n(back_cpu, 1)}x",
        None if back_cpu is None else back_cpu <= 3,
    )  # fmt: skip
    row(
        "new buyers, 1 worker: holds/s ÷ empty req/s", "≥ 20%",
        BEFORE["new_share"], _pct(tb_rate, empty_rate),
        None if new_share is None else new_share >= 0.20,
    )  # fmt: skip
    row(
        "new buyers, 1 worker: holds/s ÷ the naive baseline's (PostgreSQL row locks)",
        "ahead (> 1x)", "1.5x", _ratio(tb_rate, naive_rate),
        None if not (tb_rate and naive_rate) else tb_rate > naive_rate,
    )  # fmt: skip
    add(
        f"| new buyers: CPU per hold ÷ CPU per empty request | (no goal; was 11-20x) | "
        f"{BEFORE['new_cpu']} | {_n(new_cpu, 1)}x | |"
    )
    row(
        "2 workers, new buyers: holds/s", "≥ 5,000/s",
        BEFORE["workers_new"], f"{_n(full_rate)}/s",
        None if full_rate is None else full_rate >= 5_000,
    )  # fmt: skip
    row(
        "2 workers, hot-seat answers/s (409s)", "≥ the holds/s above",
        BEFORE["workers_hot"], f"{_n(hot_rate)}/s",
        None if hot_rate is None or full_rate is None else hot_rate >= full_rate,
    )  # fmt: skip
    row(
        "2 workers, hold p99 at half of peak", "≤ 25 ms",
        BEFORE["half_p99"], f"{_n(half_p99, 2)} ms",
        None if half_p99 is None else half_p99 <= 25,
    )  # fmt: skip
    row(
        "2 workers, orders (POST /orders: confirm + publish + 202)", "≥ 3,000/s",
        BEFORE["orders"], f"{_n(order_rate)}/s",
        None if order_rate is None else order_rate >= 3_000,
    )  # fmt: skip
    row(
        f"sell-out of {sell.seats:,} seats, every ticket in PostgreSQL" if sell
        else "sell-out, every ticket in PostgreSQL",
        "< 15 s (80,000 seats)", BEFORE["sellout"],
        f"{_n(in_pg, 1)} s" if in_pg else "not reached",
        None if not in_pg or not sell or sell.seats < 80_000 else in_pg < 15,
    )  # fmt: skip
    row(
        "oversold / 202s never decided", "0 / 0", "0 / 0",
        f"{_n(oversold)} / {_n(sell.missing_orders) if sell else '—'}",
        None if oversold is None else oversold == 0 and bool(decided_all),
    )  # fmt: skip
    row(
        "persister, worker steady rate", "≥ 20,000 tickets/s", BEFORE["persister"],
        f"{_n(best_tps)} tickets/s", None if best_tps is None else best_tps >= 20_000,
    )  # fmt: skip
    add("")
    add(
        "A quick run (`--quick`) sells out 8,000 seats, not 80,000: its sell-out is not "
        "judged against the goal."
        if sell and sell.seats < 80_000
        else "Goals are judged on a full run only where the size matters (the sell-out)."
    )
    add("")

    # -- 1. holds
    add("## 1. Hold throughput through the HTTP API")
    add("")
    add(
        f"Same {c.connections} connections for every target, {c.duration_s} s per run after a "
        f"{c.warmup_s} s warm-up; each request holds one seat for a buyer of its own "
        "(round-robin over 20,000 dev-issuer tokens), so every answer is the success path "
        "and every request pays a full token check (an RS256 signature, the dev issuer's). "
        "The *returning buyers* "
        "run uses 3,500 buyers instead, whose tokens the API has already verified (its "
        "verified-token cache holds 4,096), as buyers who retry after a 409 are; the "
        "bench lifts the per-buyer seat limit to 12 so that they never run out of seats "
        "to hold within a run. "
        "The inventory (or the baseline's table) is reset before each run. Servers are "
        "Granian + uvloop, 1 worker, started the same way (`python -m api` for TicketBuster; "
        "the same Granian settings for the other two)."
    )
    add("")
    add("```")
    add(
        f"wrk -t1 -c{c.connections} -d{c.duration_s}s --timeout 5s -s loadtest/wrk/holds.lua "
        "http://127.0.0.1:PORT -- EVENT_ID TOKENS_FILE SEATS_FILE [PACE_MS]"
    )
    add("```")
    add("")
    add(
        "| target | holds/s (201) | requests/s | p50 ms | p99 ms | server CPU | "
        "server CPU per request | wrk CPU | TicketBuster ÷ this |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    add(_hold_row("**TicketBuster** (Redis Lua, peak)", tb_peak, None))
    add(
        _hold_row(
            "TicketBuster, returning buyers (token already verified, peak)",
            tb.get("returning"),
            None,
        )
    )
    add(_hold_row("naive baseline (PostgreSQL row locks, peak)", naive.get("peak"), tb_rate))
    add(_hold_row("empty endpoint (framework ceiling)", empty.get("peak"), tb_rate))
    add("")
    add(
        "CPU is a share of one core over the run (the machine has two): the server's whole "
        "process tree, and wrk's own use. *Server CPU per request* is the server's CPU time "
        "divided by the requests it answered: the cost of one hold, less sensitive than the "
        "rates to what else runs on the machine (the naive baseline's figure leaves out "
        "PostgreSQL's own CPU)."
    )
    add("")
    add("**One connection** (`-c1`): the latency of a hold with nobody queued before it.")
    add("")
    add("| target | holds/s | p50 ms | p90 ms | p99 ms | server CPU per request |")
    add("|---|---|---|---|---|---|")
    for label, runs in (("TicketBuster", tb), ("naive baseline", naive), ("empty endpoint", empty)):
        one = runs.get("single")
        if one is None:
            add(f"| {label} | not run | | | | |")
            continue
        add(
            f"| {label} | {_n(one.ok_per_s())} | {one.p50_ms:.2f} | {one.p90_ms:.2f} | "
            f"{one.p99_ms:.2f} | {1e6 * one.server_cpu_s / max(one.requests, 1):,.0f} µs |"
        )
    add("")
    add(
        "**At about half of the peak rate**: 16 connections, each paced by wrk's `delay()` "
        "(the wait before its next request, from the one-connection latency) so that "
        "together they offer half the peak rate:"
    )
    add("")
    add("| target | offered (target) req/s | holds/s | p50 ms | p90 ms | p99 ms | max ms |")
    add("|---|---|---|---|---|---|---|")
    for label, runs in (("TicketBuster", tb), ("naive baseline", naive)):
        half = runs.get("half")
        if half is None:
            add(f"| {label} | not run | | | | | |")
            continue
        add(
            f"| {label} | {_n(half.extra.get('target_rps'))} | {_n(half.ok_per_s())} | "
            f"{half.p50_ms:.2f} | {half.p90_ms:.2f} | {half.p99_ms:.2f} | {half.max_ms:.1f} |"
        )
    add("")
    add(
        f"**Hot seats**: every request goes for one of the same {HOT} front-row seats (each "
        "buyer new, round robin), as in the first second of a sale: after the first few "
        "holds, every answer is a 409 naming the taken seat. What counts is how fast and how "
        "steadily the system says no:"
    )
    add("")
    add("| target | answers/s | of which 409 | p50 ms | p99 ms | max ms | server CPU |")
    add("|---|---|---|---|---|---|---|")
    for label, runs in (("TicketBuster", tb), ("naive baseline", naive)):
        hot = runs.get("hot")
        if hot is None:
            add(f"| {label} | not run | | | | | |")
            continue
        share = hot.statuses.get("409", 0) / hot.requests if hot.requests else 0
        add(
            f"| {label} | {_n(hot.rps)} | {100 * share:.1f}% | {hot.p50_ms:.2f} | "
            f"{hot.p99_ms:.2f} | {hot.max_ms:.1f} | {hot.server_cpu_pct:.0f}% |"
        )
    hot_tb, hot_naive = tb.get("hot"), naive.get("hot")
    if hot_tb and hot_naive:
        add("")
        add(f"TicketBuster ÷ naive on hot seats: {_ratio(hot_tb.rps, hot_naive.rps)} answers/s.")
    add("")
    r, pg = results.redis, results.postgres
    add(
        "**Storage ceilings**: the hold itself, without HTTP or Python in the way, at the same "
        "client count, no pipelining. Redis: `redis-benchmark` running `EVALSHA` of the real "
        "hold script (`lua/lib/prelude.lua` + `lua/hold.lua`, as `core/inventory.py` loads "
        "it) on a standalone `redis-server` the harness starts on a free loopback port. "
        "PostgreSQL: `pgbench` running the naive baseline's hold transaction (the same SQL: "
        "advisory lock, `SELECT ... FOR UPDATE`, conditional `UPDATE` + insert) on the shared "
        "server. Both pick random seats among a loaded keyspace, so some holds find their "
        "seat taken (the cheaper path); the share that held is shown."
    )
    add("")
    for ceiling in (r, pg):
        if ceiling is not None:
            add("```")
            add(ceiling.command)
            add("```")
    add("")
    add(
        "| storage | holds/s | p50 ms | p99 ms | held | server CPU | generator CPU | "
        "TicketBuster HTTP ÷ this |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for label, ceiling in (("Redis, EVALSHA hold.lua", r), ("PostgreSQL, naive hold tx", pg)):
        if ceiling is None:
            add(f"| {label} | not run | | | | | | |")
            continue
        server = (
            f"{100 * ceiling.server_cpu_s / ceiling.duration_s:.0f}%"
            if ceiling.server_cpu_s
            else "n/a (shared server)"
        )
        add(
            f"| {label} | {_n(ceiling.rps)} | {ceiling.p50_ms:.2f} | {ceiling.p99_ms:.2f} | "
            f"{100 * ceiling.ok_fraction:.0f}% | {server} | "
            f"{100 * ceiling.generator_cpu_s / ceiling.duration_s:.0f}% | "
            f"{_pct(tb_rate, ceiling.rps)} |"
        )
    if r and pg:
        add("")
        add(f"Redis ÷ PostgreSQL for the hold itself: **{_ratio(r.rps, pg.rps)}**.")
    add("")

    # -- 1b. two workers, orders
    add("## 1b. The API as it runs by default: 2 workers (one per core)")
    add("")
    add(
        "`make dev` and the Kubernetes pod run one Granian worker per core. The same wrk "
        "runs against that API (new buyers, a signature check each request); then the order "
        "path alone: holds made beforehand through the inventory gateway, one per request "
        "bought with `POST /api/v1/orders` (`Idempotency-Key` = the hold id), which claims "
        "the key, confirms the seats in Redis, publishes `OrderPlaced` to Kafka and answers "
        "202 (no persister runs during this run)."
    )
    add("")
    add(
        f"```\nwrk -t1 -c{c.connections} -d{c.duration_s}s --timeout 5s "
        "-s loadtest/wrk/orders.lua http://127.0.0.1:PORT -- HOLDS_FILE\n```"
    )
    add("")
    add("| run | answers/s | ok/s | p50 ms | p90 ms | p99 ms | max ms | server CPU per request |")
    add("|---|---|---|---|---|---|---|---|")
    for label, run, ok in (
        ("holds, new buyers, peak", full.get("peak"), "201"),
        ("holds, one connection", full.get("single"), "201"),
        ("holds, half of peak (16 paced connections)", full.get("half"), "201"),
        ("hot seats (mostly 409)", full.get("hot"), "409"),
        ("orders (202)", orders, "202"),
    ):
        if run is None:
            add(f"| {label} | not run | | | | | | |")
            continue
        add(
            f"| {label} | {_n(run.rps)} | {_n(run.ok_per_s(ok))} | {run.p50_ms:.2f} | "
            f"{run.p90_ms:.2f} | {run.p99_ms:.2f} | {run.max_ms:.1f} | "
            f"{1e6 * run.server_cpu_s / max(run.requests, 1):,.0f} µs |"
        )
    if orders is not None:
        add("")
        add(
            f"The order run had {orders.extra.get('holds', 0):,} holds to buy; "
            f"{orders.extra.get('wrapped', 0):,} requests came after the last one "
            "(retries of a bought hold, answered from the idempotency record)."
        )
    add("")

    # -- 2. sell-out
    add(f"## 2. Sell-out of the {SELLOUT_NAME}")
    add("")
    if sell is None:
        add(f"Not run{_why(results, 'sellout')}.")
    else:
        add(
            f"A copy of the seed's event ({sell.seats:,} seats) in the bench database. "
            f"{sell.connections} connections are the concurrent buyers: each holds "
            f"{sell.chunk} adjacent seats (the per-buyer limit) with a token of its own "
            f"({sell.buyers:,} buyers), then buys the "
            "hold (`POST /api/v1/orders`, `Idempotency-Key`). Two wrk threads walk the seat "
            "list from both ends, so they race for the same seats where they meet. The API "
            "(2 workers, as by default on this 2-core box) and one persister worker run; the "
            "ticket issuer and notifier do not (they do not gate a ticket row)."
        )
        add("")
        add("```")
        add(sell.command)
        add("```")
        add("")
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(sell.redis_counts.items()))
        decided = ", ".join(f"{k} {v:,}" for k, v in sorted(sell.decided.items())) or "none"
        ok_all = (
            sell.oversold == 0
            and sell.missing_orders == 0
            and sell.tickets == sell.redis_counts.get("sold", 0)
        )
        add("| | |")
        add("|---|---|")
        left = sell.redis_counts.get("free", 0) + sell.redis_counts.get("held", 0)
        if left:
            add(
                f"| time to sell out | not sold out: {left:,} seats left after "
                f"{sell.sold_out_s:.1f} s (the run's cap) |"
            )
        else:
            add(f"| time to sell out (first hold to last 202) | {sell.sold_out_s:.1f} s |")
        add(
            f"| time until every ticket is in PostgreSQL (from the first hold) | "
            f"{_n(sell.in_postgres_s, 1)} s{'' if sell.in_postgres_s else ' (not reached)'} |"
        )
        add(f"| requests | {sell.wrk.requests:,} ({_n(sell.wrk.rps)}/s) |")
        add(f"| HTTP statuses | {_statuses(sell.wrk.statuses)} |")
        add(f"| latency p50 / p99 | {sell.wrk.p50_ms:.1f} ms / {sell.wrk.p99_ms:.1f} ms |")
        add(f"| accepted orders (202) | {sell.accepted:,} |")
        add(f"| their outcome in PostgreSQL | {decided}; never decided: {sell.missing_orders:,} |")
        add(f"| seats in Redis afterwards | {counts} |")
        add(f"| tickets in PostgreSQL | {sell.tickets:,} |")
        add(
            f"| seats in confirmed orders / distinct | {sell.confirmed_seats:,} / "
            f"{sell.confirmed_distinct_seats:,} |"
        )
        add(f"| **oversold** | **{sell.oversold}** |")
        add(
            f"| CPU: API / persister / wrk | {sell.api_cpu_s:.0f} s / {sell.persister_cpu_s:.0f} s"
            f" / {sell.wrk.generator_cpu_s:.0f} s |"
        )
        add(
            f"| checks (0 oversold, tickets = seats sold, every 202 decided) | "
            f"{'pass' if ok_all else '**FAIL**'} |"
        )
    add("")

    # -- 3. persister
    add("## 3. Persister throughput")
    add("")
    if per is None:
        add(f"Not run{_why(results, 'persister')}.")
    else:
        add(
            f"{per.orders:,} orders of {c.sellout_chunk} seats ({per.tickets:,} tickets) of "
            "another copy of the event, as the API publishes them (`core.orders.build_order`). "
            "Three ways into PostgreSQL, the same SQL (`workers.persister.decide_and_write`) "
            "each time, the table emptied in between:"
        )
        add("")
        add("| how | tickets/s | vs order by order |")
        add("|---|---|---|")
        add(
            f"| persister worker: Kafka backlog → batches of ≤ "
            f"500 → PostgreSQL, outcomes published, Redis told (steady "
            f"rate, first to last row) | {_n(per.worker_steady_tps)} | "
            f"{_ratio(per.worker_steady_tps, per.one_by_one_tps)} |"
        )
        add(
            f"| the same write in-process, 500 orders per transaction (no Kafka) | "
            f"{_n(per.batched_tps)} | {_ratio(per.batched_tps, per.one_by_one_tps)} |"
        )
        add(
            f"| the same write in-process, {LARGE_BATCH:,} orders per transaction | "
            f"{_n(per.large_batch_tps)} | {_ratio(per.large_batch_tps, per.one_by_one_tps)} |"
        )
        add(
            f"| order by order: one transaction per order ({per.one_by_one_orders:,} orders, "
            f"capped at {c.one_by_one_cap_s:.0f} s) | {_n(per.one_by_one_tps)} | 1.0x |"
        )
        add("")
        if per.worker_s is not None:
            add(
                f"The worker drained all {per.tickets:,} tickets {per.worker_s:.1f} s after it "
                f"was started (start-up and group join included; CPU {per.worker_cpu_s:.1f} s)."
            )
        b = per.batch
        if b:
            total = b["write_s"] + b["publish_s"] + b["mark_sold_s"]
            add("")
            add(
                f"Where a worker batch's time goes: one batch of {b['orders']:.0f} orders "
                f"({c.sellout_chunk * b['orders']:,.0f} tickets) taken through the worker's "
                "three steps one after the other, in-process:"
            )
            add("")
            add("| step | seconds | share |")
            add("|---|---|---|")
            for label, key in (
                ("write: `decide_and_write`, one transaction", "write_s"),
                ("publish the outcomes (`acks=all`), all awaited together", "publish_s"),
                (
                    "tell Redis: `Inventory.mark_sold_many` per event partition",
                    "mark_sold_s",
                ),
            ):
                add(f"| {label} | {b[key]:.3f} | {100 * b[key] / total:.0f}% |")
        for note in per.notes:
            add(f"> {note}")
    add("")

    # -- 4. WS
    add("## 4. WebSocket delivery latency (area 7, `loadtest/ws_latency.py`)")
    add("")
    ws = results.ws
    if not ws or "skipped" in ws:
        add(f"Not measured in this run: {ws.get('skipped', 'not run') if ws else 'not run'}.")
    else:
        add(
            "N clients watch one event's live channel on the bench API while holds are made "
            "through the inventory; a delivery's delay runs from just before the hold call to "
            "the frame's arrival (hold script, stream tail, ~100 ms coalescing window, fan-out)."
            " The clients run in one process on the same 2 cores."
        )
        add("")
        add("```")
        add(str(ws.get("command", "")))
        add("```")
        add("")
        steps = ws.get("steps") or []
        if steps:
            cols = list(steps[0])
            add("| " + " | ".join(cols) + " |")
            add("|" + "---|" * len(cols))
            for row in steps:
                add("| " + " | ".join(_cell(row.get(k, "")) for k in cols) + " |")
            add("")
        add(
            f"Largest N with p99 under {ws.get('target_ms', 250):g} ms and nothing missing: "
            f"**{ws.get('largest_n', '—')}** (the run is capped in clients and time)."
        )
    add("")

    # -- profile
    add("## Where the hold path's time goes (py-spy)")
    add("")
    prof = results.profile
    if not prof:
        add(f"Not profiled in this run{_why(results, 'profile')}.")
    else:
        add(
            f"py-spy sampled the API's process tree during a separate {c.profile_s} s wrk run "
            f"at peak ({prof['samples']:,} samples; idle time not sampled)."
        )
        add("")
        add("```")
        add(prof["command"])
        add("```")
        add("")
        add("| layer (innermost frame) | share of samples |")
        add("|---|---|")
        for name, share in prof["layers"]:
            add(f"| {name} | {100 * share:.1f}% |")
        add("")
        add("| function (self time) | share |")
        add("|---|---|")
        for name, share in prof["self"]:
            add(f"| `{_short(name)}` | {100 * share:.1f}% |")
    add("")

    # -- wire
    add("## Micro-benchmarks (pytest-benchmark)")
    add("")
    add(
        "`tests/benchmarks/test_wire_bench.py`: msgspec encoding and decoding of the hot wire "
        "types (area 8). `tests/benchmarks/test_inventory_bench.py`: the inventory's Lua calls "
        "on the real Redis Cluster, one round trip each (areas 1-2). Medians; nothing asserted."
    )
    add("")
    wire = results.wire
    if not wire or "rows" not in wire:
        add(f"Not run: {wire.get('skipped', 'not run') if wire else 'not run'}.")
    else:
        add("```")
        add(wire["command"])
        add("```")
        add("")
        add("| benchmark | median µs | ops/s |")
        add("|---|---|---|")
        for name, median_us, ops in wire["rows"]:
            add(f"| `{name}` | {median_us:.2f} | {ops:,.0f} |")
    add("")

    add("## Reading the figures")
    add("")
    add(NOTES_START)
    add(_old_notes(out))
    add(NOTES_END)
    add("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


SELLOUT_NAME = "80,000-seat Final Copa Libertadores"
HOT = 20
LARGE_BATCH = 2_000


def _why(results: Any, step: str) -> str:
    reason = results.skipped.get(step)
    return f": {reason}" if reason else ""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items()))


def _short(frame: str) -> str:
    # "function (path/to/module.py)" -> "function (module.py)"; keep the package for ours.
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for root in ("/api/", "/core/", "/workers/", "site-packages/"):
        if root in path:
            path = path.split(root, 1)[1]
            if root != "site-packages/":
                path = root.strip("/") + "/" + path
            break
    return f"{func} ({path})"

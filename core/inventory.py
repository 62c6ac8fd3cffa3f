"""The seat inventory gateway: typed wrappers around the Lua scripts in ``lua/``.

This is the one module in ``core/`` that talks to Redis. Every operation is one
Lua script run atomically in one hash slot, ``{ev:<event_id>:<partition>}``; the
keys are built here and passed in ``KEYS`` (see ``lua/lib/prelude.lua`` for the
data model). Scripts travel through ``core.inventory_link.ScriptLink``: EVALSHA to the
primary owning the partition's slot (computed once per partition), auto-pipelined per
node, reloading on NOSCRIPT after a restart or failover, never re-sent when its outcome
is unknown unless the script only reads.

Input is validated before any Redis call; script replies are mapped to Structs
(``core.holds``, ``core.seats``) or to ``core.errors`` domain errors. A Redis
failure never leaks: it becomes ``Unavailable`` (503, retry later).

Partitions: an event is one partition unless its ``PartitionPlan`` says more. A
section belongs to one partition, and a hold to one partition. The per-buyer
limit is per event: with several partitions the hold first reads the buyer's
usage in the other partitions and the script enforces the remainder atomically
in its own partition. Two holds racing in two different partitions can each
pass that check, so with N partitions a buyer can exceed the limit only by
racing themselves; with one partition (the default) the limit is exact.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal, cast

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from core.errors import (
    Conflict,
    HoldExpired,
    InvalidInput,
    LimitExceeded,
    NotFound,
    NotOwner,
    RateLimited,
    SaleClosed,
    SeatUnavailable,
    Unavailable,
)
from core.holds import (
    AttemptBudget,
    ConfirmedHold,
    Hold,
    hold_ttl_ms,
    max_lifetime_ms,
    new_hold_id,
    parse_hold_id,
    validate_buyer,
    validate_event_id,
    validate_order_id,
    validate_partition,
    validate_quantity,
)
from core.inventory_link import LinkError, NodeDown, Route, Script, ScriptLink
from core.seats import (
    DeltaBatch,
    SeatDelta,
    SeatStatus,
    parse_seat_id,
    validate_category,
    validate_seat_ids,
    version_key,
)
from core.settings import HoldSettings

LUA_DIR: Final = Path(__file__).resolve().parent.parent / "lua"

# The partition's keys, in the order of KEYS[1..16] (lua/lib/prelude.lua).
KEY_NAMES: Final = (
    "seats",
    "rowseats",
    "catrows",
    "avail",
    "catfree",
    "state",
    "holds",
    "hold_exp",
    "buyer_holds",
    "buyer_sold",
    "orders",
    "tomb",
    "budget",
    "gate",
    "access",
    "stream",
)

# Every lua/<name>.lua, each wrapped by a method below.
SCRIPT_NAMES: Final = (
    "hold",
    "best_available",
    "extend",
    "release",
    "confirm",
    "revert",
    "mark_sold",
    "mark_sold_many",
    "reject",
    "reject_many",
    "refund",
    "expire",
    "load",
    "get_hold",
    "statuses",
    "availability",
    "buyer_usage",
    "gate",
)

# Scripts that only read: safe to send again when a reply was lost.
READ_ONLY_SCRIPTS: Final = frozenset({"get_hold", "statuses", "availability", "buyer_usage"})
# Scripts whose effect a 202 promises: followed by WAIT when TB_REDIS_CONFIRM_WAIT_MS > 0.
REPLICATED_SCRIPTS: Final = frozenset({"confirm"})
# Partitions whose route (slot + encoded keys) a process remembers.
_ROUTES_KEPT: Final = 8192

# Holds expired inline by best_available / one sweep call.
SWEEP_BATCH: Final = 500
# Orders settled by one mark_sold_many / reject_many script call; more are split into
# several calls so one call never blocks the shard for long.
MANY_CHUNK: Final = 200
_HOLD_ID_ATTEMPTS: Final = 3
# Everything a Redis call can raise; all of it becomes Unavailable.
_REDIS_FAILURES: Final = (RedisError, RedisClusterException, OSError, TimeoutError, LinkError)


def partition_tag(event_id: int, partition: int) -> str:
    """The hash tag of one partition: all its keys live in this slot."""
    return f"{{ev:{event_id}:{partition}}}"


def partition_keys(event_id: int, partition: int) -> list[str]:
    """KEYS for every inventory script of this partition."""
    tag = partition_tag(event_id, partition)
    return [f"{tag}:{name}" for name in KEY_NAMES]


def stream_key(event_id: int, partition: int) -> str:
    return f"{partition_tag(event_id, partition)}:stream"


@cache
def script_source(name: str) -> str:
    """The text loaded into Redis for one operation: the prelude, then the operation."""
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    prelude = (LUA_DIR / "lib" / "prelude.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


class PartitionPlan(msgspec.Struct, frozen=True):
    """How an event's seats are split into inventory partitions.

    ``sections`` maps a section to its partition (the catalog's
    ``sections.partition``); a section not listed goes to ``crc32(section) % count``.
    """

    count: int = 1
    sections: dict[str, int] = {}

    def __post_init__(self) -> None:
        validate_partition(self.count - 1)
        for section, partition in self.sections.items():
            if not 0 <= partition < self.count:
                raise InvalidInput(
                    f"section {section} maps to partition {partition} of {self.count}"
                )

    def partition_of(self, seat_id: str) -> int:
        """The partition holding this seat."""
        if self.count == 1:
            return 0
        section = parse_seat_id(seat_id).section
        found = self.sections.get(section)
        if found is not None:
            return found
        return zlib.crc32(section.encode()) % self.count


SINGLE_PARTITION: Final = PartitionPlan()

PlanLookup = Callable[[int], PartitionPlan]

# One order for mark_sold_many: (order_id, seats, buyer); seats/buyer may be empty
# (they are used only when Redis forgot the order, as for mark_sold).
SoldOrder = tuple[str, Sequence[str], str]
# Per order: seats changed/freed, or the error the single-order call would raise.
OrderResult = int | Conflict | NotFound


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    seats: int
    sold: int
    # Sold seats that are not in the loaded catalog (left out).
    ignored: int


def decode_state(state: str, now_ms: int) -> SeatStatus:
    """A seat's state entry (see lua/lib/prelude.lua) as a wire status at ``now_ms``."""
    kind = state[:1]
    if kind == "h":
        expires = state[2:].partition("|")[0]
        return "held" if expires.isdigit() and int(expires) > now_ms else "free"
    if kind == "p":
        return "pending"
    if kind == "s":
        return "sold"
    return "free"


def _budget_args(budget: AttemptBudget | None) -> tuple[int, int]:
    """(interval_ms, burst) of a hold script's budget arguments; (0, 1) = no budget."""
    return (0, 1) if budget is None else (budget.interval_ms, budget.burst)


def _budget_spent(rest: list[Any]) -> RateLimited:
    retry_s = max(1, -(-int(rest[0]) // 1000))
    return RateLimited(
        f"Too many hold attempts for this event; retry in {retry_s}s.", retry_after_s=retry_s
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(values: Iterable[Any]) -> list[str]:
    return [_text(v) for v in values]


class Inventory:
    """The seat inventory of every event, on a Redis Cluster.

    ``plans`` gives an event's partition plan (from a cached catalog); by default
    every event is one partition. Holds take their defaults and limits from
    ``settings``. Scripts go through one ``ScriptLink`` (one connection per primary,
    made on first use from the client's seed nodes); the client itself serves the few
    plain reads (stream tails in tests).
    """

    def __init__(
        self,
        client: RedisCluster,
        settings: HoldSettings | None = None,
        plans: PlanLookup | None = None,
        link: ScriptLink | None = None,
    ) -> None:
        self._client = client
        self._settings = settings or HoldSettings()
        self._plans = plans or (lambda _event_id: SINGLE_PARTITION)
        self._link = link or ScriptLink.for_client(client)
        self._scripts: dict[str, Script] = {
            name: Script(
                script_source(name),
                read_only=name in READ_ONLY_SCRIPTS,
                replicated=name in REPLICATED_SCRIPTS,
            )
            for name in SCRIPT_NAMES
        }
        self._routes: dict[tuple[int, int], Route] = {}

    @property
    def link(self) -> ScriptLink:
        """The script transport (shared with other script callers of this process)."""
        return self._link

    def close(self) -> None:
        """Close the link's connections (the client is the caller's to close)."""
        self._link.close()

    @property
    def settings(self) -> HoldSettings:
        return self._settings

    def plan(self, event_id: int) -> PartitionPlan:
        return self._plans(event_id)

    async def load_scripts(self) -> None:
        """Load every script on every primary (optional warm-up; NOSCRIPT is handled anyway)."""
        await self._guard(self._link.load(self._scripts.values()))

    # -- plumbing -------------------------------------------------------------------------

    @staticmethod
    async def _guard(call: Awaitable[Any]) -> Any:
        try:
            return await call
        except NodeDown as exc:
            raise Unavailable(
                "the seat inventory is unavailable, retry shortly", retry_after_s=1
            ) from exc
        except _REDIS_FAILURES as exc:
            raise Unavailable("the seat inventory is unavailable, retry shortly") from exc

    def _route(self, event_id: int, partition: int) -> Route:
        route = self._routes.get((event_id, partition))
        if route is None:
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            route = self._routes[(event_id, partition)] = Route(partition_keys(event_id, partition))
        return route

    async def _run(self, name: str, event_id: int, partition: int, args: Sequence[Any]) -> Any:
        return await self._guard(
            self._link.run(self._scripts[name], self._route(event_id, partition), args)
        )

    async def _code(
        self, name: str, event_id: int, partition: int, args: Sequence[Any]
    ) -> tuple[str, list[Any]]:
        reply = await self._run(name, event_id, partition, args)
        return _text(reply[0]), list(reply[1:])

    def _hold_from(self, event_id: int, partition: int, rest: list[Any]) -> Hold:
        # rest: hold_id, buyer, created, expires, max_expires, version, seat1, cat1, ...
        pairs = _texts(rest[6:])
        seats = pairs[0::2]
        return Hold(
            hold_id=_text(rest[0]),
            event_id=event_id,
            partition=partition,
            buyer=_text(rest[1]),
            seats=seats,
            categories=dict(zip(seats, pairs[1::2], strict=True)),
            created_at=int(rest[2]),
            expires_at=int(rest[3]),
            max_expires_at=int(rest[4]),
        )

    @staticmethod
    def _not_loaded(event_id: int) -> Unavailable:
        # A known event whose inventory is missing (cold start, lost shard): the
        # rebuild puts it back; this is not the buyer's fault.
        return Unavailable(
            f"the seats of event {event_id} are being loaded, retry shortly", retry_after_s=5
        )

    @staticmethod
    def _shut(event_id: int, rest: list[Any]) -> SaleClosed:
        # The event's sale gate (lua/gate.lua): paused, closed, cancelled or a draft.
        state = _text(rest[0])
        return SaleClosed(f"event {event_id} is {state}: its seats are not on sale", reason=state)

    @staticmethod
    def _hold_error(code: str, hold_id: str) -> Exception:
        if code == "expired":
            return HoldExpired(f"hold {hold_id} has expired", hold_id=hold_id)
        if code == "not_owner":
            return NotOwner(f"hold {hold_id} not found", hold_id=hold_id)
        if code == "unknown":
            return NotFound(f"hold {hold_id} not found", hold_id=hold_id)
        return Unavailable(f"unexpected inventory reply {code!r}")

    async def _buyer_limit(
        self, event_id: int, partition: int, buyer: str, limit: int | None = None
    ) -> int:
        """The seats the buyer may still have in ``partition`` under the per-event limit
        (``limit``, else the configured default)."""
        limit = limit or self._settings.max_seats_per_buyer
        plan = self.plan(event_id)
        if plan.count == 1:
            return limit
        others = [p for p in range(plan.count) if p != partition]
        used = await asyncio.gather(
            *(self._run("buyer_usage", event_id, p, [buyer]) for p in others)
        )
        return limit - sum(int(u) for u in used)

    def _limit_error(self, rest: list[Any], limit: int | None = None) -> LimitExceeded:
        limit = limit or self._settings.max_seats_per_buyer
        used = int(rest[0]) + (limit - int(rest[1]))
        return LimitExceeded(
            f"at most {limit} seats per buyer for this event ({used} already held or bought)",
            limit=limit,
            used=used,
        )

    # -- holds ----------------------------------------------------------------------------

    async def hold(
        self,
        event_id: int,
        seats: Sequence[str],
        buyer: str,
        ttl_s: float | None = None,
        budget: AttemptBudget | None = None,
        limit: int | None = None,
    ) -> Hold:
        """Hold these seats for the buyer, all or none.

        SeatUnavailable names the seats that are taken; InvalidInput names unknown
        seats; LimitExceeded when the buyer's per-event limit would be passed. With a
        ``budget`` the attempt first spends the buyer's request budget in the partition
        (RateLimited when it is spent), in the same script call. ``limit``: the event's
        own per-buyer limit (default: ``TB_HOLDS_MAX_SEATS_PER_BUYER``).
        """
        validate_event_id(event_id)
        validate_buyer(buyer)
        seat_ids = validate_seat_ids(seats, self._settings.max_seats_per_hold)
        ttl = hold_ttl_ms(ttl_s, self._settings)
        plan = self.plan(event_id)
        partitions = {plan.partition_of(s) for s in seat_ids}
        if len(partitions) > 1:
            raise InvalidInput(
                "these seats are in different parts of the venue; hold them separately",
                field="seats",
            )
        partition = partitions.pop()
        allowed = await self._buyer_limit(event_id, partition, buyer, limit)
        life = max_lifetime_ms(ttl, self._settings)
        for _ in range(_HOLD_ID_ATTEMPTS):
            hold_id = new_hold_id(event_id, partition)
            code, rest = await self._code(
                "hold",
                event_id,
                partition,
                [hold_id, buyer, ttl, life, allowed, *_budget_args(budget), *seat_ids],
            )
            budget = None  # spent by this attempt, whatever came of it
            if code == "ok":
                return self._hold_from(event_id, partition, rest)
            if code == "budget":
                raise _budget_spent(rest)
            if code == "shut":
                raise self._shut(event_id, rest)
            if code == "taken":
                taken = _texts(rest)
                raise SeatUnavailable(f"seats not available: {', '.join(taken)}", seats=taken)
            if code == "unknown":
                unknown = _texts(rest)
                raise InvalidInput(
                    f"no such seats in this event: {', '.join(unknown)}",
                    field="seats",
                    seats=unknown,
                )
            if code == "limit":
                raise self._limit_error(rest, limit)
            if code == "not_loaded":
                raise self._not_loaded(event_id)
            if code != "duplicate":
                raise Unavailable(f"unexpected inventory reply {code!r}")
        raise Unavailable("could not allocate a hold id")

    async def hold_best(
        self,
        event_id: int,
        category: str,
        quantity: int,
        buyer: str,
        ttl_s: float | None = None,
        budget: AttemptBudget | None = None,
        limit: int | None = None,
        accessible: bool = False,
        reserved_until_ms: int = 0,
    ) -> Hold:
        """Hold the best ``quantity`` adjacent seats in one row of ``category``.

        Rows are tried front first; a choice that leaves no single-seat gap is
        preferred, in any partition of a split event: every partition is asked for a
        gap-free run first, and only then the first partition (front first) that has a
        gap-leaving one. SeatUnavailable (with ``seats=[]``) when no row has room. A
        ``budget`` is spent once per request, in the first partition tried.
        ``accessible``: only wheelchair spaces and companion seats; otherwise those are
        skipped until ``reserved_until_ms`` (server time; 0 = not reserved).
        """
        validate_event_id(event_id)
        validate_buyer(buyer)
        validate_category(category)
        validate_quantity(quantity, self._settings)
        ttl = hold_ttl_ms(ttl_s, self._settings)
        life = max_lifetime_ms(ttl, self._settings)
        known = False
        count = self.plan(event_id).count
        # (partition, gap_free_only): a single partition decides in one call.
        passes = [(p, count > 1) for p in range(count)]
        if count > 1:
            passes += [(p, False) for p in range(count)]
        no_category: set[int] = set()
        for partition, gap_free_only in passes:
            if partition in no_category:
                continue
            allowed = await self._buyer_limit(event_id, partition, buyer, limit)
            for _ in range(_HOLD_ID_ATTEMPTS):
                hold_id = new_hold_id(event_id, partition)
                code, rest = await self._code(
                    "best_available",
                    event_id,
                    partition,
                    [
                        hold_id, buyer, ttl, life, allowed, category, quantity, SWEEP_BATCH,
                        *_budget_args(budget), "1" if accessible else "0", reserved_until_ms,
                        int(gap_free_only),
                    ],
                )  # fmt: skip
                budget = None
                if code != "duplicate":
                    break
            if code == "ok":
                return self._hold_from(event_id, partition, rest)
            if code == "budget":
                raise _budget_spent(rest)
            if code == "shut":
                raise self._shut(event_id, rest)
            if code == "limit":
                raise self._limit_error(rest, limit)
            if code == "none":
                known = True
            elif code == "not_loaded":
                raise self._not_loaded(event_id)
            elif code == "unknown_category":
                no_category.add(partition)
            else:
                raise Unavailable(f"unexpected inventory reply {code!r}")
        if not known:
            raise InvalidInput(f"this event has no seats in category {category}", field="category")
        raise SeatUnavailable(
            f"no {quantity} adjacent seats left together in {category}",
            seats=[],
            category=category,
        )

    async def get_hold(self, hold_id: str, buyer: str) -> Hold:
        """The buyer's live hold. NotFound/NotOwner (404) or HoldExpired (410) otherwise."""
        event_id, partition = parse_hold_id(hold_id)
        validate_buyer(buyer)
        code, rest = await self._code("get_hold", event_id, partition, [hold_id, buyer])
        if code != "ok":
            raise self._hold_error(code, hold_id)
        return self._hold_from(event_id, partition, rest)

    async def extend(self, hold_id: str, buyer: str) -> Hold:
        """Push the hold's expiry out by its TTL, never past ``max_expires_at``."""
        event_id, partition = parse_hold_id(hold_id)
        validate_buyer(buyer)
        code, rest = await self._code("extend", event_id, partition, [hold_id, buyer])
        if code != "ok":
            raise self._hold_error(code, hold_id)
        return self._hold_from(event_id, partition, rest)

    async def release(self, hold_id: str, buyer: str) -> None:
        """Give the hold's seats back. Releasing an expired hold is a no-op."""
        event_id, partition = parse_hold_id(hold_id)
        validate_buyer(buyer)
        code, _ = await self._code("release", event_id, partition, [hold_id, buyer])
        if code not in ("ok", "expired"):
            raise self._hold_error(code, hold_id)

    # -- orders ---------------------------------------------------------------------------

    async def confirm(self, hold_id: str, buyer: str, order_id: str) -> ConfirmedHold:
        """Turn a live hold into a pending order; repeating the same call is safe.

        HoldExpired (410) if the hold ran out, NotFound/NotOwner (404) otherwise,
        Conflict (409) if ``order_id`` was already used for another hold.
        """
        event_id, partition = parse_hold_id(hold_id)
        validate_buyer(buyer)
        validate_order_id(order_id)
        code, rest = await self._code("confirm", event_id, partition, [hold_id, buyer, order_id])
        if code == "order_exists":
            raise Conflict(f"order {order_id} already exists", order_id=order_id)
        if code == "shut":
            raise self._shut(event_id, rest)
        if code != "ok":
            raise self._hold_error(code, hold_id)
        pairs = _texts(rest[2:])
        seats = pairs[0::2]
        return ConfirmedHold(
            hold_id=hold_id,
            order_id=order_id,
            event_id=event_id,
            partition=partition,
            buyer=buyer,
            seats=seats,
            categories=dict(zip(seats, pairs[1::2], strict=True)),
            confirmed_at=int(rest[0]),
            version=_text(rest[1]),
        )

    async def _order_op(
        self, name: str, event_id: int, partition: int, order_id: str, *extra: str
    ) -> list[Any]:
        validate_event_id(event_id)
        validate_partition(partition)
        validate_order_id(order_id)
        code, rest = await self._code(name, event_id, partition, [order_id, *extra])
        if code == "unknown":
            raise NotFound(f"order {order_id} not found in the inventory", order_id=order_id)
        if code in ("not_pending", "conflict"):
            status = _text(rest[0])
            raise Conflict(f"order {order_id} is {status}", order_id=order_id, status=status)
        if code != "ok":
            raise Unavailable(f"unexpected inventory reply {code!r}")
        return rest

    async def revert(self, event_id: int, partition: int, order_id: str) -> Literal["held", "free"]:
        """Undo a confirm whose publish failed: the seats go back to the hold.

        Returns "held", or "free" when the hold's original expiry has passed.
        """
        rest = await self._order_op("revert", event_id, partition, order_id)
        return cast(Literal["held", "free"], _text(rest[1]))

    async def mark_sold(
        self,
        event_id: int,
        partition: int,
        order_id: str,
        seats: Sequence[str] = (),
        buyer: str = "",
    ) -> int:
        """Pending -> sold once the order is committed. Returns seats changed (0 if again).

        Pass the order's ``seats`` (and ``buyer``) when you have them: if Redis lost
        the order (rebuild, failover) or rejected it (released before a late commit),
        those seats are marked sold anyway, since PostgreSQL committed them. Without
        seats an unknown order is NotFound, a rejected one Conflict.
        """
        seat_ids = [parse_seat_id(s).seat_id for s in seats]
        if buyer:
            validate_buyer(buyer)
        rest = await self._order_op("mark_sold", event_id, partition, order_id, buyer, *seat_ids)
        return int(rest[0])

    async def reject(self, event_id: int, partition: int, order_id: str) -> int:
        """Pending -> free after a rejection. Returns seats freed (0 if again, or if
        Redis does not know the order: nothing is pending under it)."""
        rest = await self._order_op("reject", event_id, partition, order_id)
        return int(rest[0])

    async def refund(
        self, event_id: int, partition: int, order_id: str, seats: Sequence[str]
    ) -> int:
        """Sold -> free for the refunded ``seats`` of an order (lua/refund.lua), after
        PostgreSQL committed the refund. Returns seats freed; 0 when called again, or for
        seats no longer sold under the order (already free, or sold again since)."""
        seat_ids = [parse_seat_id(s).seat_id for s in seats]
        if not seat_ids:
            return 0
        rest = await self._order_op("refund", event_id, partition, order_id, *seat_ids)
        return int(rest[0])

    @staticmethod
    def _order_result(order_id: str, code: str, value: Any) -> OrderResult:
        if code == "ok":
            return int(value)
        if code == "unknown":
            return NotFound(f"order {order_id} not found in the inventory", order_id=order_id)
        if code == "conflict":
            status = _text(value)
            return Conflict(f"order {order_id} is {status}", order_id=order_id, status=status)
        raise Unavailable(f"unexpected inventory reply {code!r}")

    async def _many(
        self,
        call: Callable[[list[Any]], Awaitable[Any]],
        order_ids: Sequence[str],
        args: Sequence[Sequence[Any]],
    ) -> list[OrderResult]:
        """Run a *_many script over ``MANY_CHUNK`` orders at a time (one after the other)."""
        results: list[OrderResult] = []
        for start in range(0, len(order_ids), MANY_CHUNK):
            end = start + MANY_CHUNK
            flat = [a for order_args in args[start:end] for a in order_args]
            reply = list(await call(flat))
            ids = order_ids[start:end]
            if len(reply) != 2 * len(ids):
                raise Unavailable(f"unexpected inventory reply length {len(reply)}")
            for k, order_id in enumerate(ids):
                results.append(self._order_result(order_id, _text(reply[2 * k]), reply[2 * k + 1]))
        return results

    async def mark_sold_many(
        self, event_id: int, partition: int, orders: Sequence[SoldOrder]
    ) -> list[OrderResult]:
        """``mark_sold`` for several orders of one partition, in one script call per
        ``MANY_CHUNK`` orders. Each order is settled exactly as ``mark_sold`` would; the
        result per order (in order) is the seats changed, or the NotFound / Conflict that
        ``mark_sold`` would have raised for it (returned, not raised).
        """
        validate_event_id(event_id)
        validate_partition(partition)
        order_ids: list[str] = []
        args: list[list[Any]] = []
        for order_id, seats, buyer in orders:
            validate_order_id(order_id)
            if buyer:
                validate_buyer(buyer)
            seat_ids = [parse_seat_id(s).seat_id for s in seats]
            order_ids.append(order_id)
            args.append([order_id, buyer, len(seat_ids), *seat_ids])
        return await self._many(
            lambda flat: self._run("mark_sold_many", event_id, partition, flat), order_ids, args
        )

    async def reject_many(
        self, event_id: int, partition: int, order_ids: Sequence[str]
    ) -> list[OrderResult]:
        """``reject`` for several orders of one partition, in one script call per
        ``MANY_CHUNK`` orders. Per order (in order): seats freed, or the Conflict that
        ``reject`` would have raised (returned, not raised).
        """
        validate_event_id(event_id)
        validate_partition(partition)
        ids = list(order_ids)
        for order_id in ids:
            validate_order_id(order_id)
        return await self._many(
            lambda flat: self._run("reject_many", event_id, partition, flat),
            ids,
            [[o] for o in ids],
        )

    # -- upkeep ---------------------------------------------------------------------------

    async def sweep(self, event_id: int, partition: int, limit: int = SWEEP_BATCH) -> int:
        """Expire holds past their expiry (with deltas). Returns how many holds."""
        validate_event_id(event_id)
        validate_partition(partition)
        if not 0 < limit <= 100_000:
            raise InvalidInput("sweep limit must be 1..100000")
        return int(await self._run("expire", event_id, partition, [limit]))

    async def set_gate(self, event_id: int, state: str | None) -> None:
        """Shut (``state``: draft, paused, closed, cancelled) or open (None) the sale in
        every partition of the event (lua/gate.lua). Once this returns, no hold (and with
        ``cancelled`` no order) of the event is accepted until the gate is opened."""
        validate_event_id(event_id)
        if state not in (None, "draft", "paused", "closed", "cancelled"):
            raise InvalidInput(f"unknown sale gate state {state!r}", field="state")
        for partition in range(self.plan(event_id).count):
            await self._run("gate", event_id, partition, [state or ""])

    async def load(
        self,
        event_id: int,
        partition: int,
        seats: Sequence[tuple[str, str]],
        sold: Mapping[str, str | tuple[str, str]] | None = None,
        min_version: str | None = None,
        access: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """(Re)build a partition: its seats with their category, and the sold seats.

        ``seats`` order ranks rows for best-available (front first). ``sold`` maps a
        seat to its order id, or to ``(order_id, buyer)`` so the buyer's limit
        counts it. Holds and pending orders in the partition are dropped; the
        change stream is kept and gets a "reload" delta above ``min_version``.
        ``access`` flags seats ``"w"`` (wheelchair space) or ``"c"`` (companion seat):
        best available keeps them for requests that ask (``hold_best(accessible=...)``).
        """
        validate_event_id(event_id)
        validate_partition(partition)
        plan = self.plan(event_id)
        if min_version:
            version_key(min_version)
        seen: set[str] = set()
        seat_lines: list[str] = []
        for seat_id, category in seats:
            seat = parse_seat_id(seat_id).seat_id
            if seat in seen:
                raise InvalidInput(f"seat {seat} listed twice", field="seats")
            if plan.partition_of(seat) != partition:
                raise InvalidInput(f"seat {seat} is not in partition {partition}", field="seats")
            seen.add(seat)
            seat_lines.append(f"{seat}\t{validate_category(category)}")
        sold_lines: list[str] = []
        for seat_id, value in (sold or {}).items():
            order_id, buyer = (value, "") if isinstance(value, str) else value
            if buyer:
                validate_buyer(buyer)  # printable: no tab or newline
            seat = parse_seat_id(seat_id).seat_id
            sold_lines.append(f"{seat}\t{validate_order_id(order_id)}\t{buyer}")
        access_lines: list[str] = []
        for seat_id, flag in (access or {}).items():
            if flag not in ("w", "c"):
                raise InvalidInput(f"seat {seat_id}: access flag must be w or c", field="access")
            access_lines.append(f"{parse_seat_id(seat_id).seat_id}\t{flag}")
        # Packed strings instead of 2 x N arguments (see lua/load.lua).
        args = [
            min_version or "",
            "\n".join(seat_lines),
            "\n".join(sold_lines),
            "\n".join(access_lines),
        ]
        reply = await self._run("load", event_id, partition, args)
        return LoadResult(
            version=_text(reply[0]), seats=int(reply[1]), sold=int(reply[2]), ignored=int(reply[3])
        )

    # -- reads ----------------------------------------------------------------------------

    async def partition_statuses(
        self, event_id: int, partition: int
    ) -> tuple[str, dict[str, SeatStatus]]:
        """(version, {seat: status}) of one partition; free seats are left out."""
        reply = await self._run("statuses", event_id, partition, [])
        now = int(reply[1])
        flat = _texts(reply[2:])
        statuses: dict[str, SeatStatus] = {}
        for seat, state in zip(flat[0::2], flat[1::2], strict=True):
            status = decode_state(state, now)
            if status != "free":
                statuses[seat] = status
        return _text(reply[0]), statuses

    async def seat_statuses(self, event_id: int) -> tuple[str, dict[str, SeatStatus]]:
        """(version, {seat: status}) for every seat that is not free.

        Seats not in the map are free. The version is the partition's stream id;
        with several partitions it is their ids joined by commas, in partition order.
        """
        validate_event_id(event_id)
        parts = await asyncio.gather(
            *(self.partition_statuses(event_id, p) for p in range(self.plan(event_id).count))
        )
        merged: dict[str, SeatStatus] = {}
        for _, statuses in parts:
            merged.update(statuses)
        return ",".join(version for version, _ in parts), merged

    async def availability(self, event_id: int) -> dict[str, int]:
        """Free seats per category (empty when the event is not loaded)."""
        validate_event_id(event_id)
        replies = await asyncio.gather(
            *(self._run("availability", event_id, p, []) for p in range(self.plan(event_id).count))
        )
        free: dict[str, int] = {}
        for reply in replies:
            flat = list(reply)
            for category, count in zip(flat[0::2], flat[1::2], strict=True):
                free[_text(category)] = free.get(_text(category), 0) + int(count)
        return free

    async def buyer_usage(self, event_id: int, buyer: str) -> int:
        """Seats the buyer has in the event: live holds + pending + sold."""
        validate_event_id(event_id)
        validate_buyer(buyer)
        used = await asyncio.gather(
            *(
                self._run("buyer_usage", event_id, p, [buyer])
                for p in range(self.plan(event_id).count)
            )
        )
        return sum(int(u) for u in used)

    async def read_deltas(
        self,
        event_id: int,
        partition: int,
        after: str,
        count: int = 500,
        block_ms: int | None = None,
    ) -> DeltaBatch:
        """Deltas of one partition after version ``after`` (oldest first).

        ``complete`` is False when deltas after ``after`` were trimmed away or the
        partition was rebuilt: the client must refetch the seat map. With
        ``block_ms`` the call waits up to that long for a first delta.
        """
        validate_event_id(event_id)
        validate_partition(partition)
        after_key = version_key(after)
        if not 0 < count <= 10_000:
            raise InvalidInput("count must be 1..10000")
        key = stream_key(event_id, partition)
        reply = await self._guard(self._client.xread({key: after}, count=count, block=block_ms))
        entries: list[tuple[Any, dict[Any, Any]]] = []
        if isinstance(reply, dict):  # RESP3
            for value in reply.values():
                entries = list(value[0])
        elif reply:
            entries = list(reply[0][1])
        deltas = [self._delta_from(event_id, partition, eid, fields) for eid, fields in entries]
        complete = all(d.status != "reload" for d in deltas)
        if complete and after_key != (0, 0):
            complete = await self._gap_kept(key, after_key)
        return DeltaBatch(
            deltas=deltas,
            last_version=deltas[-1].version if deltas else after,
            complete=complete,
        )

    async def _gap_kept(self, key: str, after: tuple[int, int]) -> bool:
        try:
            info = await self._client.xinfo_stream(key)
        except RedisError as exc:
            if "no such key" in str(exc).lower():
                return False
            raise Unavailable("the seat inventory is unavailable, retry shortly") from exc
        except _REDIS_FAILURES as exc:
            raise Unavailable("the seat inventory is unavailable, retry shortly") from exc
        fields = {_text(k): v for k, v in dict(info).items()}
        # Trimming (MAXLEN ~) drops the oldest entries: if the first one left is
        # newer than ``after``, something in between may be gone.
        first = fields.get("first-entry")
        if first and version_key(_text(first[0])) > after:
            return False
        deleted = fields.get("max-deleted-entry-id", "0-0")
        return version_key(_text(deleted)) <= after

    @staticmethod
    def _delta_from(
        event_id: int, partition: int, entry_id: Any, fields: dict[Any, Any]
    ) -> SeatDelta:
        f = {_text(k): _text(v) for k, v in fields.items()}
        seats = f.get("seats", "")
        return SeatDelta(
            event_id=event_id,
            partition=partition,
            version=_text(entry_id),
            seats=seats.split(",") if seats else [],
            status=f.get("status", ""),
            op=f.get("op", ""),
            hold_id=f.get("hold"),
            order_id=f.get("order"),
        )

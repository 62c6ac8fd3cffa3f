"""The waiting room of a queued on-sale: rules, admission tokens and the fairness log.

A queued event (a row in ``queue.settings``, migrations/0005_queue.sql) lets fans join
from ``queue_opens_at``. Who joins before ``sale_opens_at`` gets a random place at the
opening; who joins after goes to the back in arrival order. Fans leave the queue at the
organizer's rate (fans per minute) and get a signed admission token, which holds and
orders of the event need while the event is queued.

The random order is fixed by a seed chosen when the queue is set up: its SHA-256 (the
commitment) is public from the start, the seed itself once the sale opened. A pre-queue
fan's place is the rank of ``pre_queue_score(seed, pid)`` among the pre-queue fans, so
anyone with the log and the revealed seed recomputes the order (``verify_log``).

Fans appear under a pseudonym (``pseudonym``: an HMAC of the subject, per event), never
their account id. The queue state lives in Redis in the event's slot (lua/queue_*.lua,
``queue_keys``); the fairness log is appended from those scripts' log stream into
PostgreSQL with each entry carrying the hash of the one before (``chain_hash``).

Pure: no I/O here; the scripts run through ``core.inventory_link`` and the log is
written by workers/admitter.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import jwt
import msgspec

from core.clock import epoch_ms
from core.errors import DomainError
from core.inventory_link import Route, Script
from core.tickets import ALGORITHM, Jwks, SigningKey, _load_private, _public_from_jwk

LUA_DIR: Final = Path(__file__).resolve().parents[1] / "lua"
ISSUER: Final = "ticketbuster"
AUDIENCE: Final = "admission"
# Post-opening scores start here; pre-queue scores are 52-bit hashes below it (exact in a
# Lua double, so ZSET order is the hash order).
FIFO_BASE: Final = 2**52
GENESIS_HASH: Final = "0" * 64

QueueState = Literal["pre", "open", "sold_out", "closed"]
LogKind = Literal["commit", "join", "open", "admit", "sold_out", "resume", "reveal", "hold", "sale"]


def _script(name: str) -> Script:
    prelude = (LUA_DIR / "lib" / "queue.lua").read_text(encoding="utf-8")
    return Script(prelude + "\n" + (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8"))


JOIN: Final = _script("queue_join")
POSITION: Final = _script("queue_position")
ADMIT: Final = _script("queue_admit")

# Every queue script receives these keys, in this order (lua/lib/queue.lua).
KEY_NAMES: Final = ("meta", "wait", "admitted", "ips", "log", "pacer")


def queue_keys(event_id: int) -> list[str]:
    """The queue's keys, in the event's first partition's slot."""
    return [f"{{ev:{event_id}:0}}:q:{name}" for name in KEY_NAMES]


# -- errors -------------------------------------------------------------------------------


class AdmissionRequired(DomainError):
    """A queued on-sale: holds and orders need a valid admission token of the event."""

    status = 403
    code = "admission_required"
    title = "Admission required"


class QueueNotOpen(DomainError):
    status = 409
    code = "queue_not_open"
    title = "The queue is not open"


class QueueSoldOut(DomainError):
    status = 409
    code = "sold_out"
    title = "Sold out"


class QueueJoinLimited(DomainError):
    status = 429
    code = "queue_join_limit"
    title = "Too many queue joins from this address"

    def __init__(self, detail: str, retry_after_s: int = 60) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class ProofOfWorkRequired(DomainError):
    """Joining needs a solved challenge (``TB_QUEUE_POW_BITS`` > 0); ``challenge`` and
    ``bits`` in the problem say what to solve."""

    status = 403
    code = "proof_of_work_required"
    title = "Proof of work required"


class NotQueued(DomainError):
    status = 404
    code = "not_queued"
    title = "Not in the queue"


# -- configuration ------------------------------------------------------------------------


class QueueConfig(msgspec.Struct, frozen=True):
    """An event's queue settings (``queue.settings``); times in ms since the epoch."""

    event_id: int
    queue_opens_ms: int
    sale_opens_ms: int
    sale_closes_ms: int
    rate_per_min: int
    admission_window_s: int
    joins_per_ip: int
    seed: str  # hex; secret until the sale opened
    seed_commitment: str
    partitions: int = 1
    rate_auto: bool = False


def shoppers_cap(seats_left: int, max_seats_per_fan: int) -> int:
    """``auto`` rate: how many admitted fans may be shopping at once - enough to take
    every seat left twice over (not everyone buys the most they may), at least one."""
    return max(1, -(-2 * seats_left // max(1, max_seats_per_fan)))


# The queue settings of published events, with their sale window (api/queue, workers).
CONFIG_SQL: Final = """
SELECT q.event_id, q.queue_opens_at, e.sale_opens_at,
       least(e.sale_closes_at, e.starts_at) AS sale_closes_at, q.rate_per_min,
       q.admission_window_s, q.joins_per_ip, q.seed, q.seed_commitment, e.partitions,
       q.rate_auto
FROM queue.settings q JOIN catalog.events e ON e.id = q.event_id
WHERE e.status = 'published'
"""


def config_of(row: Any) -> QueueConfig:
    """A QueueConfig from a row of ``CONFIG_SQL``."""
    return QueueConfig(
        event_id=row["event_id"],
        queue_opens_ms=epoch_ms(row["queue_opens_at"]),
        sale_opens_ms=epoch_ms(row["sale_opens_at"]),
        sale_closes_ms=epoch_ms(row["sale_closes_at"]),
        rate_per_min=row["rate_per_min"],
        admission_window_s=row["admission_window_s"],
        joins_per_ip=row["joins_per_ip"],
        seed=row["seed"],
        seed_commitment=row["seed_commitment"],
        partitions=row["partitions"],
        rate_auto=row["rate_auto"],
    )


def new_seed() -> tuple[str, str]:
    """A fresh seed and its commitment (SHA-256 of the seed's hex text)."""
    seed = secrets.token_hex(32)
    return seed, commitment(seed)


def commitment(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def burst(rate_per_min: int) -> int:
    """Admissions that may come at once: one second's worth, at least one."""
    return max(1, rate_per_min // 60)


def pseudonym(key: bytes, event_id: int, sub: str) -> str:
    """The fan's id in the queue and the log: HMAC of (event, subject), 64 bits hex.

    Per event, so one fan's queues cannot be linked; keyed, so nobody can test whether an
    account joined."""
    mac = hmac.new(key, f"{event_id}\x00{sub}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def ip_bucket(key: bytes, ip: str) -> str:
    """The per-IP join counter's field (the address itself is not kept)."""
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()[:16]


# -- proof of work on join ----------------------------------------------------------------

POW_WINDOW_S: Final = 300


def pow_challenge(key: bytes, event_id: int, now_s: float) -> str:
    """This window's challenge of an event: "<event>.<window>.<mac>" (stateless: any
    replica checks it with the key; it stays valid for this window and the next)."""
    window = int(now_s // POW_WINDOW_S)
    mac = hmac.new(key, f"pow\x00{event_id}\x00{window}".encode(), hashlib.sha256)
    return f"{event_id}.{window}.{mac.hexdigest()[:16]}"


def pow_solves(challenge: str, sub: str, nonce: str, bits: int) -> bool:
    """SHA-256("<challenge>:<sub>:<nonce>") starts with ``bits`` zero bits. Bound to the
    subject, so one solution serves one account (whose join is idempotent anyway)."""
    digest = hashlib.sha256(f"{challenge}:{sub}:{nonce}".encode()).digest()
    return int.from_bytes(digest, "big") >> (256 - bits) == 0 if bits > 0 else True


def check_pow(
    key: bytes, event_id: int, sub: str, proof: str | None, bits: int, now_s: float
) -> None:
    """Raise ProofOfWorkRequired unless ``proof`` ("<challenge>:<nonce>") is a solution of
    a current challenge of the event. Nothing to do when ``bits`` is 0."""
    if bits <= 0:
        return
    fresh = pow_challenge(key, event_id, now_s)
    challenge, _, nonce = (proof or "").rpartition(":")
    current = {fresh, pow_challenge(key, event_id, now_s - POW_WINDOW_S)}
    if challenge not in current or not nonce or len(nonce) > 64:
        raise ProofOfWorkRequired(
            "joining this queue needs a proof of work: send the header Proof-Of-Work: "
            "<challenge>:<nonce> with SHA-256(challenge:subject:nonce) starting with "
            f"{bits} zero bits",
            challenge=fresh,
            bits=bits,
        )
    if not pow_solves(challenge, sub, nonce, bits):
        raise ProofOfWorkRequired(
            "the proof of work does not solve the challenge", challenge=fresh, bits=bits
        )


def pre_queue_score(seed: str, pid: str) -> int:
    """A pre-queue fan's random score: the first 52 bits of SHA-1(seed || pid) (what
    ``redis.sha1hex`` computes in lua/queue_join.lua)."""
    return int(hashlib.sha1((seed + pid).encode(), usedforsecurity=False).hexdigest()[:13], 16)


def eta_s(ahead: int, rate_per_min: int) -> int:
    """Estimated wait of a fan with ``ahead`` fans before them, in seconds."""
    return -(-ahead * 60 // max(1, rate_per_min))


# -- views --------------------------------------------------------------------------------


class QueueView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /api/v1/events/{id}/queue: the queue as anyone may see it."""

    event_id: int
    state: QueueState
    queue_opens_at: int
    sale_opens_at: int
    rate_per_min: int
    waiting: int
    admitted: int
    seed_commitment: str
    # Revealed once the sale opened (the pre-queue order is then fixed).
    seed: str | None = None
    log_head: str | None = None
    # Proof of work on join: solve ``pow_challenge`` to ``pow_bits`` (0: none needed).
    pow_bits: int = 0
    pow_challenge: str | None = None


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    """A fan's place: waiting (with ``position``, 1 = next) or admitted (with the token)."""

    event_id: int
    status: Literal["waiting", "admitted", "sold_out"]
    pre_queue: bool = False
    # 1-based; None while in the pre-queue (the draw happens at the opening).
    position: int | None = None
    ahead: int | None = None
    waiting: int = 0
    eta_s: int | None = None
    rate_per_min: int = 0
    admission: str | None = None
    admission_expires_at: int | None = None


class JoinRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST .../queue: no fields today (the caller is the token's subject)."""


# -- admission tokens ---------------------------------------------------------------------


class AdmissionClaims(msgspec.Struct, frozen=True):
    iss: str
    aud: str
    sub: str
    event: int
    pid: str
    iat: int
    exp: int
    max_holds: int
    max_seats: int


def sign_admission(claims: AdmissionClaims, key: SigningKey) -> str:
    return jwt.encode(
        msgspec.to_builtins(claims),
        _load_private(key.pem),
        algorithm=ALGORITHM,
        headers={"kid": key.kid, "typ": "admission+jwt"},
    )


def verify_admission(token: str | None, keys: Jwks, *, sub: str, event_id: int) -> AdmissionClaims:
    """The claims of a valid admission token of ``sub`` for ``event_id``; else
    ``AdmissionRequired`` saying what was wrong (missing, forged, expired, other event
    or other fan)."""
    if not token:
        raise AdmissionRequired(
            f"event {event_id} is sold through its waiting room: join the queue and send the "
            "admission token you get when admitted (field 'admission')"
        )
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AdmissionRequired("the admission token is malformed") from None
    match = next((k for k in keys.keys if k.kid == header.get("kid")), None)
    if header.get("alg") != ALGORITHM or match is None:
        raise AdmissionRequired("the admission token was not signed by this system")
    try:
        payload = jwt.decode(
            token,
            _public_from_jwk(match.x),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={"require": ["exp", "iat", "sub", "event"]},
        )
        claims = msgspec.convert(payload, AdmissionClaims)
    except jwt.ExpiredSignatureError:
        raise AdmissionRequired("the admission token expired: join the queue again") from None
    except (jwt.PyJWTError, msgspec.ValidationError):
        raise AdmissionRequired("the admission token does not verify") from None
    if claims.event != event_id:
        raise AdmissionRequired(f"the admission token is for event {claims.event}, not {event_id}")
    if claims.sub != sub:
        raise AdmissionRequired("the admission token belongs to another fan")
    return claims


# -- the fairness log ---------------------------------------------------------------------


class LogEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One fairness-log entry as published; ``hash`` = SHA-256(prev || canonical body)."""

    seq: int
    at: int  # ms since the epoch (Redis time)
    kind: str
    prev: str
    hash: str
    pid: str | None = None
    pre: bool | None = None
    position: int | None = None
    rate: int | None = None
    opens: int | None = None
    seed: str | None = None
    commitment: str | None = None
    waiting: int | None = None
    # hold / sale: the hold or order id and how many seats
    ref: str | None = None
    seats: int | None = None


_INT_FIELDS: Final = ("at", "position", "rate", "opens", "waiting")


def stream_fields(fields: dict[Any, Any]) -> dict[str, Any]:
    """An entry's fields (without seq) from the queue's Redis log stream (lua/queue_*.lua)."""
    raw = {_t(k): _t(v) for k, v in fields.items()}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _INT_FIELDS:
            out[name] = int(value)
        elif name == "pre":
            out[name] = value == "1"
        else:
            out[name] = value
    return out


# Seat-delta ops (lua/lib/prelude.lua TB.delta) that are a hold or a sale, as log kinds.
DELTA_KINDS: Final = {"hold": "hold", "sold": "sale"}


def delta_fields(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any] | None:
    """A log entry's fields (without seq) from a seat-delta stream entry, or None when the
    delta is neither a hold nor a sale. ``at`` is the entry id's time (Redis time)."""
    raw = {_t(k): _t(v) for k, v in fields.items()}
    kind = DELTA_KINDS.get(raw.get("op", ""))
    if kind is None:
        return None
    ref = raw.get("hold") or raw.get("order") or ""
    seats = len([s for s in raw.get("seats", "").split(",") if s])
    return {"kind": kind, "at": int(_t(entry_id).split("-")[0]), "ref": ref, "seats": seats}


class LogPage(msgspec.Struct, frozen=True):
    event_id: int
    entries: list[LogEntry]
    head: str
    length: int
    next_after: int | None = None


_encode: Final = msgspec.json.Encoder(order="sorted").encode


def entry_body(entry: LogEntry | dict[str, Any]) -> bytes:
    """The canonical bytes an entry's hash covers: its fields but ``prev`` and ``hash``,
    as JSON with sorted keys and no blanks."""
    raw = msgspec.to_builtins(entry) if isinstance(entry, LogEntry) else dict(entry)
    body = {k: v for k, v in raw.items() if k not in ("prev", "hash") and v is not None}
    return _encode(body)


_BODY: Final = msgspec.json.Decoder(dict[str, Any])


def stored_entry(body: str, prev: str, hash_: str) -> LogEntry:
    """A log entry from its stored form (``queue.fairness_log``: body, prev, hash)."""
    return msgspec.convert({**_BODY.decode(body), "prev": prev, "hash": hash_}, LogEntry)


def chain_hash(prev: str, body: bytes) -> str:
    return hashlib.sha256(prev.encode() + body).hexdigest()


def seal(fields: dict[str, Any], prev: str) -> LogEntry:
    """The entry of ``fields`` (seq, at, kind, ...) chained after ``prev``."""
    body = entry_body(fields)
    return msgspec.convert({**fields, "prev": prev, "hash": chain_hash(prev, body)}, LogEntry)


class Verdict(msgspec.Struct, frozen=True):
    ok: bool
    entries: int
    problems: list[str]
    head: str


def expected_order(entries: Sequence[LogEntry], seed: str) -> list[str]:
    """The queue order the log and seed imply: pre-queue joins by their seeded score, then
    later joins in arrival order."""
    pre = [e.pid for e in entries if e.kind == "join" and e.pre and e.pid]
    late = [e.pid for e in entries if e.kind == "join" and not e.pre and e.pid]
    return sorted(pre, key=lambda p: pre_queue_score(seed, p)) + late


def verify_log(entries: Iterable[LogEntry]) -> Verdict:
    """Recompute the chain; check the seed against its commitment, that admissions went
    in the order the seed and the joins imply, and never faster than the published rate.
    """
    problems: list[str] = []
    log = list(entries)
    prev = GENESIS_HASH
    for i, e in enumerate(log):
        if e.seq != i + 1:
            problems.append(f"entry {i + 1}: sequence number {e.seq}")
        if e.prev != prev:
            problems.append(f"entry {e.seq}: prev hash does not match entry {e.seq - 1}")
        if chain_hash(e.prev, entry_body(e)) != e.hash:
            problems.append(f"entry {e.seq}: hash does not match its content")
        prev = e.hash
    commit = next((e for e in log if e.kind == "commit"), None)
    reveal = next((e for e in log if e.kind == "reveal"), None)
    if commit is None:
        problems.append("no seed commitment in the log")
    elif reveal is not None and (
        reveal.seed is None or commitment(reveal.seed) != commit.commitment
    ):
        problems.append("the revealed seed does not match its commitment")
    admits = [e for e in log if e.kind == "admit"]
    if admits and reveal is None:
        problems.append("fans were admitted but the seed was never revealed")
    if reveal is not None and reveal.seed is not None and commit is not None:
        # A fan admitted out of order: the admitted sequence must be a prefix of the
        # order, each admitted fan at its own position.
        order = expected_order(log, reveal.seed)
        rank = {pid: i + 1 for i, pid in enumerate(order)}
        for n, e in enumerate(admits, start=1):
            if e.pid not in rank:
                problems.append(f"entry {e.seq}: admitted {e.pid} never joined")
            elif rank[e.pid] != n or e.position != n:
                problems.append(
                    f"entry {e.seq}: {e.pid} admitted {n}th, but its place is {rank[e.pid]}"
                )
        rate = commit.rate or 0
        opened = next((e.at for e in log if e.kind == "open"), None)
        if admits and opened is None:
            problems.append("fans were admitted but the queue never opened")
        elif opened is not None and rate > 0:
            allowance = burst(rate)
            for n, e in enumerate(admits, start=1):
                if n > allowance + rate * (e.at - opened) / 60_000:
                    problems.append(
                        f"entry {e.seq}: {n} admitted after {e.at - opened} ms, above {rate}/min"
                    )
                    break
    return Verdict(ok=not problems, entries=len(log), problems=problems, head=prev)


# -- the gateway to the queue scripts -----------------------------------------------------


class Place(msgspec.Struct, frozen=True):
    """A fan's place as the scripts report it."""

    status: Literal["waiting", "admitted"]
    rank: int = 0  # 0-based among the waiting fans
    admitted_before: int = 0  # admissions so far (rank + this = fans ever ahead)
    pre_queue: bool = False
    waiting: int = 0
    admitted_ms: int = 0
    window_ms: int = 0


class QueueStatus(msgspec.Struct, frozen=True):
    state: QueueState
    waiting: int
    admitted: int
    place: Place | None = None


class AdmitPass(msgspec.Struct, frozen=True):
    outcome: Literal["admitted", "not_open", "sold_out", "not_pacer", "absent"]
    admitted: tuple[str, ...] = ()
    waiting: int = 0
    admitted_total: int = 0


def _t(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _place(reply: Sequence[Any]) -> Place:
    if _t(reply[0]) == "admitted":
        return Place(status="admitted", admitted_ms=int(reply[1]), window_ms=int(reply[2]))
    return Place(
        status="waiting",
        rank=int(reply[1]),
        admitted_before=int(reply[2]),
        pre_queue=int(reply[3]) == 1,
        waiting=int(reply[4]),
    )


class QueueGateway:
    """Typed calls of lua/queue_*.lua over the inventory's script link."""

    def __init__(self, link: Any) -> None:
        self.link = link  # core.inventory_link.ScriptLink

    @staticmethod
    def _route(event_id: int) -> Route:
        return Route(queue_keys(event_id))

    async def join(self, config: QueueConfig, pid: str, ip: str) -> Place:
        """Join (or find one's place again). QueueNotOpen, QueueSoldOut, QueueJoinLimited."""
        args = (
            pid,
            ip,
            config.seed,
            config.seed_commitment,
            config.queue_opens_ms,
            config.sale_opens_ms,
            config.sale_closes_ms,
            config.rate_per_min,
            config.joins_per_ip,
            config.admission_window_s * 1000,
        )
        reply = await self.link.run(JOIN, self._route(config.event_id), args)
        code = _t(reply[0])
        if code == "not_open":
            raise QueueNotOpen(
                f"the queue of event {config.event_id} opens at {int(reply[1])} (ms)"
            )
        if code == "closed":
            raise QueueNotOpen(f"the sale of event {config.event_id} is over")
        if code == "sold_out":
            raise QueueSoldOut(f"event {config.event_id} is sold out; the queue is closed")
        if code == "ip_limit":
            raise QueueJoinLimited(
                f"this address already joined the queue of event {config.event_id} "
                f"{int(reply[1])} times"
            )
        return _place(reply)

    async def status(self, event_id: int, pid: str = "") -> QueueStatus | None:
        """The queue's state and, with ``pid``, the fan's place; None if never created."""
        reply = await self.link.run(POSITION, self._route(event_id), (pid,))
        if _t(reply[0]) == "absent":
            return None
        place = _place(reply[3:]) if len(reply) > 3 else None
        state = _t(reply[0])
        return QueueStatus(
            state=state,  # type: ignore[arg-type]
            waiting=int(reply[1]),
            admitted=int(reply[2]),
            place=place,
        )

    async def admit(
        self,
        event_id: int,
        admitter: str,
        lease_ms: int,
        seats_left: int,
        max_batch: int,
        max_shoppers: int = 0,
    ) -> AdmitPass:
        """One pacing pass; ``max_shoppers`` > 0 caps the fans admitted within the
        admission window (the ``auto`` rate)."""
        reply = await self.link.run(
            ADMIT,
            self._route(event_id),
            (admitter, lease_ms, seats_left, max_batch, max_shoppers),
        )
        code = _t(reply[0])
        if code == "admitted":
            return AdmitPass(
                outcome="admitted",
                admitted=tuple(_t(p) for p in reply[4:]),
                waiting=int(reply[2]),
                admitted_total=int(reply[3]),
            )
        if code == "sold_out":
            return AdmitPass(outcome="sold_out", waiting=int(reply[1]))
        return AdmitPass(outcome=code)  # type: ignore[arg-type]

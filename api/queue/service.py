"""The waiting room as the API serves it: join, position, admission tokens, the log.

One ``QueueService`` per process (``queue_service``, kept on ``app.state.queue``). Its
state is the queue in Redis (lua/queue_*.lua) and the settings in PostgreSQL (cached
``TB_QUEUE_CONFIG_TTL_S``), so every API replica gives every fan the same answer.

``require_admission`` is the check of the hold and order paths: they call it only for an
event whose cached catalog record says ``queued``, so events without a waiting room pay
nothing; for a queued one it is a signature check (no Redis round trip).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Final

from api.catalog.service import MAX_EVENT_ID
from api.queue.repository import QueueRepository
from api.tickets.keys import private_key_pem
from core.errors import NotFound, Unavailable
from core.queue import (
    AUDIENCE,
    ISSUER,
    AdmissionClaims,
    LogPage,
    NotQueued,
    Place,
    PositionView,
    QueueConfig,
    QueueGateway,
    QueueView,
    check_pow,
    eta_s,
    ip_bucket,
    pow_challenge,
    pseudonym,
    sign_admission,
    verify_admission,
)
from core.settings import QueueSettings, Settings, SettingsError
from core.tickets import Jwks, SigningKey, jwks, signing_key

log = logging.getLogger("ticketbuster.api.queue")

# The admission's hold budget (claims; enforced by the hold path's per-buyer limit too).
MAX_HOLDS: Final = 2
MAX_SEATS: Final = 6
MAX_LOG_PAGE: Final = 1000
MAX_CACHED_CONFIGS: Final = 10_000


class QueueService:
    def __init__(
        self, settings: Settings, repository: QueueRepository, gateway: QueueGateway
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.gateway = gateway
        pem = private_key_pem(Path(settings.queue.signing_key_path), settings)
        self.key: SigningKey = signing_key(pem)
        self.jwks: Jwks = jwks([pem])
        if settings.env == "prod" and settings.queue.pseudonym_key == QueueSettings().pseudonym_key:
            raise SettingsError("TB_QUEUE_PSEUDONYM_KEY: set a secret key when TB_ENV=prod")
        self._pid_key = settings.queue.pseudonym_key.encode()
        self._configs: dict[int, tuple[float, QueueConfig | None]] = {}

    async def config(self, event_id: int) -> QueueConfig:
        """The event's queue settings (cached); NotFound when the event is not queued."""
        if not 0 < event_id <= MAX_EVENT_ID:
            raise NotFound(f"event {event_id} not found")
        now = time.monotonic()
        hit = self._configs.get(event_id)
        if hit is None or hit[0] <= now:
            found = await self.repository.config(event_id)
            hit = (now + self.settings.queue.config_ttl_s, found)
            if len(self._configs) >= MAX_CACHED_CONFIGS:  # probes of many ids stay bounded
                self._configs.clear()
            self._configs[event_id] = hit
        if hit[1] is None:
            raise NotFound(f"event {event_id} has no waiting room")
        return hit[1]

    def pid(self, event_id: int, sub: str) -> str:
        return pseudonym(self._pid_key, event_id, sub)

    async def join(
        self, sub: str, event_id: int, ip: str, proof: str | None = None
    ) -> PositionView:
        config = await self.config(event_id)
        pid = self.pid(event_id, sub)
        check_pow(self._pid_key, event_id, sub, proof, self.settings.queue.pow_bits, time.time())
        place = await self.gateway.join(config, pid, ip_bucket(self._pid_key, ip))
        return self._view(config, sub, pid, place)

    async def position(self, sub: str, event_id: int) -> PositionView:
        return (await self.watch_place(sub, event_id))[0]

    async def watch_place(self, sub: str, event_id: int) -> tuple[PositionView, int | None]:
        """The fan's place and, once the order is fixed, their number in it (admitted so far
        + rank + 1; it does not change, see api/live/queue_push.py); None otherwise."""
        config = await self.config(event_id)
        pid = self.pid(event_id, sub)
        status = await self.gateway.status(event_id, pid)
        if status is None or status.place is None:
            raise NotQueued(f"you are not in the queue of event {event_id}: join it first")
        place = status.place
        if status.state == "sold_out" and place.status == "waiting":
            return PositionView(event_id=event_id, status="sold_out", waiting=status.waiting), None
        view = self._view(config, sub, pid, place)
        if view.status != "waiting" or view.pre_queue:
            return view, None
        return view, place.admitted_before + place.rank + 1

    def _view(self, config: QueueConfig, sub: str, pid: str, place: Place) -> PositionView:
        if place.status == "admitted":
            expires_ms = place.admitted_ms + place.window_ms
            claims = AdmissionClaims(
                iss=ISSUER,
                aud=AUDIENCE,
                sub=sub,
                event=config.event_id,
                pid=pid,
                iat=place.admitted_ms // 1000,
                exp=expires_ms // 1000,
                max_holds=MAX_HOLDS,
                max_seats=MAX_SEATS,
            )
            return PositionView(
                event_id=config.event_id,
                status="admitted",
                admission=sign_admission(claims, self.key),
                admission_expires_at=expires_ms,
                rate_per_min=config.rate_per_min,
            )
        pre = place.pre_queue and time.time() * 1000 < config.sale_opens_ms
        ahead = None if pre else place.rank
        return PositionView(
            event_id=config.event_id,
            status="waiting",
            pre_queue=pre,
            position=None if ahead is None else ahead + 1,
            ahead=ahead,
            waiting=place.waiting,
            eta_s=None if ahead is None else eta_s(ahead + 1, config.rate_per_min),
            rate_per_min=config.rate_per_min,
        )

    async def view(self, event_id: int) -> QueueView:
        config = await self.config(event_id)
        status = await self.gateway.status(event_id)
        length, head = await self.repository.head(event_id)
        opened = time.time() * 1000 >= config.sale_opens_ms
        state = status.state if status is not None else "pre"
        if state == "pre" and opened:  # drawn; the admitter's next pass says so in Redis
            state = "open"
        if time.time() * 1000 >= config.sale_closes_ms:
            state = "closed"
        return QueueView(
            event_id=event_id,
            state=state,
            queue_opens_at=config.queue_opens_ms,
            sale_opens_at=config.sale_opens_ms,
            rate_per_min=config.rate_per_min,
            waiting=status.waiting if status is not None else 0,
            admitted=status.admitted if status is not None else 0,
            seed_commitment=config.seed_commitment,
            # The draw is fixed once the sale opened; the seed is public from then on.
            seed=config.seed if opened else None,
            log_head=head if length else None,
            pow_bits=self.settings.queue.pow_bits,
            pow_challenge=(
                pow_challenge(self._pid_key, event_id, time.time())
                if self.settings.queue.pow_bits > 0
                else None
            ),
        )

    async def log_page(self, event_id: int, after: int, limit: int) -> LogPage:
        await self.config(event_id)
        limit = max(1, min(limit, MAX_LOG_PAGE))
        after = max(0, min(after, MAX_EVENT_ID))  # a bigint, like seq
        entries = await self.repository.page(event_id, after, limit)
        length, head = await self.repository.head(event_id)
        more = entries and entries[-1].seq < length
        return LogPage(
            event_id=event_id,
            entries=entries,
            head=head,
            length=length,
            next_after=entries[-1].seq if more else None,
        )

    def require_admission(self, token: str | None, sub: str, event_id: int) -> AdmissionClaims:
        """The caller's admission to ``event_id``; 403 ``admission_required`` otherwise."""
        return verify_admission(token, self.jwks, sub=sub, event_id=event_id)


def queue_service(app_state: Any) -> QueueService:
    """The process's ``QueueService``, made on first use from the lifespan's pool and link."""
    service = getattr(app_state, "queue", None)
    if isinstance(service, QueueService):
        return service
    pool = getattr(app_state, "db_pool", None)
    inventory = getattr(app_state, "inventory", None)
    if pool is None or inventory is None:
        raise RuntimeError("app.state needs db_pool and inventory (see api/app.py lifespan)")
    try:
        service = QueueService(
            app_state.settings, QueueRepository(pool), QueueGateway(inventory.link)
        )
    except (SettingsError, OSError, ValueError) as exc:  # a missing Secret, a bad key
        log.error("waiting rooms are not configured: %s", exc)
        raise Unavailable("waiting rooms are not available, retry shortly") from exc
    app_state.queue = service
    return service


def require_admission(app_state: Any, token: str | None, sub: str, event_id: int) -> None:
    """For the hold and order paths of a queued event (see the module docstring)."""
    queue_service(app_state).require_admission(token, sub, event_id)

"""Typed settings, read once from ``TB_*`` environment variables.

Each concern has its own Struct. ``load_settings()`` reads the environment
once; a bad value fails fast with a message that names the variable.
The defaults run the whole system locally against the servers started by
``python -m core.devservices up``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from core.faults import FaultSettings

Env = Literal["dev", "test", "prod"]


class SettingsError(ValueError):
    """A ``TB_*`` variable is missing or malformed."""


class RedisSettings(msgspec.Struct, frozen=True):
    # Comma-separated seed nodes of the Redis Cluster.
    cluster_nodes: str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    max_connections: int = 64
    socket_timeout_s: float = 2.0
    # > 0: the confirm script is followed by WAIT 1 <ms> before the 202 (one replica has
    # the order, or that long passed); docs/decisions/0806-no-replica-wait-on-confirm.md.
    confirm_wait_ms: int = 0

    def startup_nodes(self) -> list[tuple[str, int]]:
        nodes = []
        for item in self.cluster_nodes.split(","):
            host, _, port = item.strip().rpartition(":")
            nodes.append((host, int(port)))
        return nodes


class DatabaseSettings(msgspec.Struct, frozen=True):
    url: str = "postgresql://postgres@127.0.0.1:5432/ticketbuster"
    min_pool: int = 2
    max_pool: int = 10


class KafkaSettings(msgspec.Struct, frozen=True):
    bootstrap: str = "127.0.0.1:19092"
    # Real Kafka: on. The dev/test broker (Tansu) rejects InitProducerId.
    idempotent_producer: bool = False
    topic_prefix: str = "tb."
    partitions: int = 6
    request_timeout_s: float = 5.0


class HoldSettings(msgspec.Struct, frozen=True):
    ttl_s: int = 600
    # Total lifetime cap for a hold, as a multiple of ttl_s.
    max_lifetime_factor: float = 2.0
    max_seats_per_buyer: int = 6
    max_seats_per_hold: int = 6
    # Hold attempts per buyer and event (per partition of a split event), checked inside the
    # hold script: on average attempts_per_minute, at most attempts_burst at once (0 = off).
    attempts_per_minute: int = 60
    attempts_burst: int = 10
    # Best available keeps wheelchair spaces and companion seats for requests that ask
    # for them until this long before the event starts (0 = never kept).
    accessible_release_s: int = 86400


class AuthSettings(msgspec.Struct, frozen=True):
    issuer: str = "http://127.0.0.1:8000/dev-issuer"
    audience: str = "ticketbuster"
    jwks_url: str = ""
    algorithms: str = "EdDSA,ES256,RS256"
    # The built-in dev issuer mints a token for anyone who asks: off unless asked for.
    # `make dev` (core.devservices run), the tests and the bench turn it on; TB_ENV=prod
    # refuses it.
    dev_issuer_enabled: bool = False
    # Partner clients of the dev issuer's client-credentials grant:
    # "id=secret scope scope;id2=secret2 scope" (secret may be "sha256:<hex>"). Dev only.
    clients: str = ""
    dev_token_ttl_s: int = 3600
    # Partner systems registered at the OIDC provider (Keycloak): comma-separated client
    # ids. A token whose `client_id` (else `azp`) is one of them acts as that partner
    # (`client:<id>`, scopes from `scope`/`scp`), never as a person.
    partner_clients: str = ""
    # The token claim that names an organizer's organization (a code of
    # catalog.organizations); Keycloak can map a user attribute or group to it.
    org_claim: str = "org"

    def partner_client_ids(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.partner_clients.split(",") if c.strip())


class ApiSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    # Granian worker processes; 0 = one per core this process may use.
    workers: int = 0
    cors_origins: str = "http://127.0.0.1:8000,http://localhost:8000"
    max_body_bytes: int = 65536
    trusted_proxies: str = ""
    # Requests per rate_limit_window_s, kept in Redis Cluster (shared by all replicas).
    rate_limit_enabled: bool = True
    rate_limit_per_ip: int = 6000
    rate_limit_per_user: int = 600
    rate_limit_window_s: int = 60
    # Load shedding per API process: beyond max_in_flight concurrent /api/ requests, or when
    # no response has started after request_timeout_s, answer 503 + Retry-After (0 = off).
    max_in_flight: int = 1000
    request_timeout_s: float = 15.0
    # Hold attempts and orders served by the edge's direct routes (api/direct.py), not
    # Litestar's router; the answers are the same (false: every request through Litestar).
    direct_routes: bool = True


class TicketSettings(msgspec.Struct, frozen=True):
    # PEM Ed25519 private key that signs ticket tokens. Dev/test: generated on first use
    # (under .tb/, git-ignored). Prod: a mounted Secret; missing means fail fast.
    signing_key_path: str = ".tb/ticket-signing-key.pem"
    # Comma-separated PEM paths of retired keys still published in the JWKS (rotation).
    previous_keys: str = ""
    # Comma-separated PEM paths of the PUBLIC keys the API publishes (JWKS) and checks
    # tickets with: current first, then retired ones. Set in prod, so that only the issuer
    # holds the private key. Empty: derived from signing_key_path and previous_keys (dev
    # and test, where one generated file serves both).
    public_keys_path: str = ""


class WorkerSettings(msgspec.Struct, frozen=True):
    # Each worker serves /healthz, /readyz and /metrics on its own port.
    http_host: str = "127.0.0.1"
    persister_port: int = 9101
    issuer_port: int = 9102
    notifier_port: int = 9103
    expirer_port: int = 9104
    admitter_port: int = 9105
    mailer_port: int = 9106
    payments_port: int = 9107
    batch_max_records: int = 500
    batch_timeout_ms: int = 50
    # A message that fails this many times goes to the dead-letter topic.
    dlq_after_attempts: int = 3
    sweep_interval_s: float = 5.0
    reconcile_interval_s: float = 15.0
    # A pending order older than this without a row in PostgreSQL is stuck.
    reconcile_grace_s: float = 120.0
    # Orders whose Redis update (mark_sold / reject) may wait in the persister while
    # Redis is away; beyond that the oldest are left to the reconciler.
    redis_backlog_max: int = 50_000
    # While Redis answers, a batch's offsets are committed once Redis is told, waiting at
    # most this long; while it does not, they are committed without waiting.
    redis_wait_ms: int = 1000


class LiveSettings(msgspec.Struct, frozen=True):
    """WebSocket live channels (api/live, docs/decisions/0701-live-seat-map.md)."""

    coalesce_ms: int = 100
    heartbeat_s: float = 15.0
    # No frame from the client for this long: the connection is dead (close 4408).
    heartbeat_timeout_s: float = 45.0
    # Frames queued per client before it counts as too slow (close 4429).
    queue_frames: int = 256
    block_ms: int = 1000
    read_count: int = 500
    # Partition streams one replica tails at once (each blocks one Redis connection).
    max_partitions: int = 512
    max_connections: int = 20000
    # Live sockets one client address (an IPv6 client's /64) may hold on one replica; the
    # next is closed with 4429 (0 = no cap). Counted per replica: N replicas, N times this.
    max_connections_per_ip: int = 50
    # Stream entries one ``?since=`` reconnect may replay (all partitions together); a
    # client further behind gets a ``resync`` (refetch the seat map) instead.
    replay_max_entries: int = 1000
    user_poll_ms: int = 200
    hold_warning_s: float = 60.0
    auth_timeout_s: float = 5.0
    linger_s: float = 5.0


class GateSettings(msgspec.Struct, frozen=True):
    """Check-in at the gate (core/gate.py)."""

    # Tickets are admitted until this long after the event starts; then it is over.
    closes_after_start_s: int = 12 * 3600
    # Admissions one gate snapshot (GET /events/{id}/gate) lists at most.
    snapshot_max_admissions: int = 100_000


class SmtpSettings(msgspec.Struct, frozen=True):
    """The SMTP server the mailer worker hands ticket e-mails to (workers/mailer.py)."""

    host: str = "127.0.0.1"
    port: int = 25
    # Empty: no AUTH. In prod the password comes from a Secret.
    username: str = ""
    password: str = ""
    # "none", "starttls" (upgrade on the submission port, 587) or "tls" (implicit, 465).
    security: Literal["none", "starttls", "tls"] = "none"
    sender: str = "TicketBuster <tickets@ticketbuster.dev>"
    timeout_s: float = 10.0


class OrganizerSettings(msgspec.Struct, frozen=True):
    # Largest seat-map import (JSON or CSV) the organizer API accepts: an 80,000-seat
    # stadium is about 3 MB of JSON, far over the API's general max_body_bytes.
    max_map_bytes: int = 16 * 1024 * 1024


class QueueSettings(msgspec.Struct, frozen=True):
    """Waiting rooms of queued on-sales (core/queue.py, docs/decisions/1001-waiting-room.md)."""

    # PEM Ed25519 private key that signs admission tokens; every API replica reads the
    # same one. Dev/test: generated on first use (under .tb/). Prod: a mounted Secret.
    signing_key_path: str = ".tb/admission-signing-key.pem"
    # Keys the fans' pseudonyms in the fairness log (HMAC of the subject). Prod: a Secret.
    pseudonym_key: str = "dev-only-pseudonym-key"
    # The admitter's pass interval, and the pacing lease (a crashed admitter's successor
    # takes over after it).
    admit_interval_ms: int = 250
    lease_ms: int = 3000
    admit_max_batch: int = 1000
    # Fairness-log entries copied from Redis to PostgreSQL per pass and event.
    log_batch: int = 5000
    # Proof of work on join: leading zero bits of SHA-256 a joiner must find (0 = off;
    # 16 is ~65,000 hashes, well under a second on a phone).
    pow_bits: int = 0
    # Queue settings and states cached per API process.
    config_ttl_s: float = 10.0


class PaymentSettings(msgspec.Struct, frozen=True):
    """The payment step of the saga (core/payments.py, docs/decisions/1101-payments-saga.md)."""

    # "simulated" (dev and tests: served by the API under /sim-pay) or "stripe".
    provider: Literal["simulated", "stripe"] = "simulated"
    # When true, POST /api/v1/orders refuses a hold that costs money (402
    # payment_required): it is bought through POST /api/v1/payments. Off by default so the
    # wave-1 API (and its benchmarks) keep buying free of charge; on in k8s/.
    required: bool = False
    # How long a buyer has to approve a payment; the hold is extended to cover it (within
    # the hold's lifetime cap). A payment still pending after it (plus a grace) expires.
    window_s: int = 600
    expire_grace_s: int = 60
    # Self-cancel: a buyer may cancel an order until this many hours before the event
    # (an event's own refund_window_hours wins; null there and here means never).
    self_cancel_hours: int | None = 48
    # The simulated provider: its base URL (the API that serves /sim-pay), its secret
    # (API key and webhook signing key; "new,old" during a rotation), and where it sends
    # its signed callbacks. Refused when TB_ENV=prod.
    sim_url: str = "http://127.0.0.1:8000"
    sim_secret: str = "dev-only-simulated-provider-secret"  # noqa: S105 (dev default)
    sim_callback_url: str = "http://127.0.0.1:8000/api/v1/payments/webhooks/simulated"
    # How late a "late" simulated callback comes (seconds after approval).
    sim_late_s: float = 30.0
    # Stripe (the official stripe package): secret key and webhook signing secret(s).
    stripe_api_key: str = ""
    stripe_webhook_secret: str = ""
    # The payments worker's pass interval.
    worker_interval_s: float = 0.5


class Settings(msgspec.Struct, frozen=True):
    env: Env = "dev"
    redis: RedisSettings = RedisSettings()
    database: DatabaseSettings = DatabaseSettings()
    kafka: KafkaSettings = KafkaSettings()
    holds: HoldSettings = HoldSettings()
    auth: AuthSettings = AuthSettings()
    api: ApiSettings = ApiSettings()
    tickets: TicketSettings = TicketSettings()
    workers: WorkerSettings = WorkerSettings()
    live: LiveSettings = LiveSettings()
    gate: GateSettings = GateSettings()
    smtp: SmtpSettings = SmtpSettings()
    organizer: OrganizerSettings = OrganizerSettings()
    faults: FaultSettings = FaultSettings()
    queue: QueueSettings = QueueSettings()
    payments: PaymentSettings = PaymentSettings()


# Section name -> Struct type; a variable TB_<SECTION>_<FIELD> sets a field.
_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "redis": RedisSettings,
    "database": DatabaseSettings,
    "kafka": KafkaSettings,
    "holds": HoldSettings,
    "auth": AuthSettings,
    "api": ApiSettings,
    "tickets": TicketSettings,
    "workers": WorkerSettings,
    "live": LiveSettings,
    "gate": GateSettings,
    "smtp": SmtpSettings,
    "organizer": OrganizerSettings,
    "faults": FaultSettings,
    "queue": QueueSettings,
    "payments": PaymentSettings,
}
# Short aliases users expect.
_ALIASES = {"TB_DATABASE_URL": ("database", "url"), "TB_REDIS_NODES": ("redis", "cluster_nodes")}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``TB_*`` variables (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {name: {} for name in _SECTIONS}
    for key, value in env.items():
        if not key.startswith("TB_"):
            continue
        if key in _ALIASES:
            section, field = _ALIASES[key]
            raw[section][field] = value
            continue
        rest = key[3:].lower()
        section, _, field = rest.partition("_")
        struct = _SECTIONS.get(section)
        if struct is not None and field in struct.__struct_fields__:
            raw[section][field] = value
    top: dict[str, Any] = {"env": env.get("TB_ENV", "dev")}
    for section, struct in _SECTIONS.items():
        try:
            top[section] = msgspec.convert(raw[section], struct, strict=False)
        except msgspec.ValidationError as exc:
            # "Expected `int`, got `str` - at `$.port`" -> name the variable.
            path = str(exc).rpartition("$.")[2].rstrip("`")
            var = f"TB_{section.upper()}_{path.upper()}" if path else f"TB_{section.upper()}_*"
            raise SettingsError(f"{var}: {exc}") from None
    try:
        settings = msgspec.convert(top, Settings)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"TB_ENV: {exc} (one of dev, test, prod)") from None
    if settings.env == "prod" and settings.auth.dev_issuer_enabled:
        raise SettingsError(
            "TB_AUTH_DEV_ISSUER_ENABLED: the built-in dev issuer must be off when TB_ENV=prod"
        )
    if settings.env == "prod" and settings.faults.enabled():
        names = ", ".join(f"TB_FAULTS_{n.upper()}" for n in settings.faults.enabled())
        raise SettingsError(f"{names}: fault points are for tests and refused when TB_ENV=prod")
    if settings.env == "prod" and not settings.auth.issuer.startswith("https://"):
        # The default points at the dev issuer; prod must name its real OIDC provider.
        raise SettingsError("TB_AUTH_ISSUER: must be the https:// URL of the OIDC issuer in prod")
    if settings.env == "prod" and settings.payments.provider == "simulated":
        raise SettingsError(
            "TB_PAYMENTS_PROVIDER: the simulated provider is for dev and tests; use stripe in prod"
        )
    return settings

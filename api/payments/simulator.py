"""The simulated payment provider (dev and tests; absent when TB_ENV=prod).

It behaves like a hosted checkout: ``POST /sim-pay/intents`` (API key = the shared
secret) opens an intent, the buyer approves or declines it on
``/sim-pay/checkout/{intent}``, and the provider confirms asynchronously with a signed
callback to ``TB_PAYMENTS_SIM_CALLBACK_URL`` (core.payments.sign), delivered again until
it is answered 2xx. The buyer (or a test) picks a failure mode with the decision:

- ``normal``: one callback at once;
- ``duplicate``: the same callback twice;
- ``late``: the callback comes ``TB_PAYMENTS_SIM_LATE_S`` after approval;
- ``timeout``: the provider never hears the approval (nothing is charged, no callback).

The checkout page takes ``?return=/path``: after the decision it links back there (the
PWA passes its payment page). Only a same-origin path is linked; anything else is ignored.

Refunds: ``POST /sim-pay/intents/{intent}/refunds`` (idempotent by its key; never more
than was captured).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import msgspec
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, JSONBody, Parameter, QueryParameter

from core.errors import Conflict, NotFound, Unauthorized, Unavailable
from core.payments import (
    SIM_SIGNATURE_HEADER,
    SimCallback,
    SimIntent,
    SimIntentCreate,
    SimRefund,
    SimRefundCreate,
    sign,
)
from core.settings import Settings

log = logging.getLogger("ticketbuster.simpay")


class Decision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    decision: Literal["approve", "decline"]
    mode: Literal["normal", "duplicate", "late", "timeout"] = "normal"


_INTENT = re.compile(r"^si_[0-9a-f]{32}$")
# A path on this origin: one leading slash (never "//", which is another host), no
# scheme, no backslash (browsers read "/\\host" as "//host"), no spaces or controls.
_RETURN = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@%/?#]{0,255}")


def return_path(value: str | None) -> str | None:
    """The checkout's ``return`` parameter if it is a same-origin path, else None (so the
    page can never send the buyer to another site)."""
    return value if value and _RETURN.fullmatch(value) else None


def _return_link(
    back: str | None, label: str = "Return to TicketBuster", id_: str = "return"
) -> str:
    if back is None:
        return ""
    return f'<p><a id="{id_}" href="{html.escape(back)}">{label}</a></p>'


def _intent(value: str) -> str:
    """An intent id as this provider makes them; anything else is not one (404)."""
    if not _INTENT.match(value):
        raise NotFound(f"no intent {value[:64]!r}")
    return value


def _pool(state: State) -> Any:
    pool = getattr(state, "db_pool", None)
    if pool is None:
        raise Unavailable("the simulated provider is not ready")
    return pool


def _check_key(request: Request[Any, Any, State]) -> None:
    settings: Settings = request.app.state.settings
    given = request.headers.get("authorization", "").removeprefix("Bearer ")
    if not any(hmac.compare_digest(given, s) for s in settings.payments.sim_secret.split(",") if s):
        raise Unauthorized("the simulated provider's API key is wrong")


class SimulatedProviderController(Controller):
    path = "/sim-pay"
    tags = ["simulated payment provider"]
    include_in_schema = False

    @post("/intents", status_code=200)
    async def create_intent(
        self, data: JSONBody[SimIntentCreate], request: Request[Any, Any, State]
    ) -> SimIntent:
        _check_key(request)
        pool = _pool(request.app.state)
        intent = await pool.fetchval(
            "INSERT INTO simpay.intents (intent, payment_id, amount, currency, description)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payment_id) DO UPDATE"
            " SET payment_id = EXCLUDED.payment_id RETURNING intent",
            "si_" + uuid.uuid4().hex,
            data.payment_id,
            data.amount,
            data.currency,
            data.description[:200],
        )
        return SimIntent(intent=intent, checkout_url=f"/sim-pay/checkout/{intent}")

    @get("/checkout/{intent:str}", media_type="text/html", cache_control=None)
    async def checkout_page(
        self,
        intent: Annotated[str, Parameter(max_length=64)],
        request: Request[Any, Any, State],
        back: Annotated[str | None, QueryParameter(name="return", required=False)] = None,
    ) -> str:
        row = await _pool(request.app.state).fetchrow(
            "SELECT * FROM simpay.intents WHERE intent = $1", _intent(intent)
        )
        if row is None:
            raise NotFound(f"no intent {intent!r}")
        amount = f"{row['amount'] / 100:.2f} {row['currency']}"
        state = html.escape(row["status"])
        i = html.escape(intent)
        back = return_path(back)
        action = f"/sim-pay/checkout/{i}" + (
            f"?return={html.escape(quote(back, safe=''))}" if back else ""
        )
        return f"""<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simulated checkout</title>
<body style="font-family:system-ui;max-width:30rem;margin:2rem auto">
<h1>Simulated checkout</h1><p>{html.escape(row["description"])}</p>
<p>Amount: <strong id="amount">{html.escape(amount)}</strong>
 · status <span id="status">{state}</span></p>
<form method="post" action="{action}">
<label>Failure mode <select name="mode"><option>normal</option><option>duplicate</option>
<option>late</option><option>timeout</option></select></label>
<p><button name="decision" value="approve">Approve</button>
<button name="decision" value="decline">Decline</button></p></form>
{_return_link(back, "Back to TicketBuster without deciding", "back")}</body></html>"""

    @post("/checkout/{intent:str}", status_code=200)
    async def decide_form(
        self,
        intent: Annotated[str, Parameter(max_length=64)],
        request: Request[Any, Any, State],
        data: Annotated[Decision, Body(media_type=RequestEncodingType.URL_ENCODED)],
        back: Annotated[str | None, QueryParameter(name="return", required=False)] = None,
    ) -> Response[str]:
        status = await _decide(request.app.state, _intent(intent), data)
        return Response(
            "<!doctype html><html lang='en'><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>Simulated checkout</title>"
            f"<p id='result'>Payment {status}. You can return to TicketBuster.</p>"
            f"{_return_link(return_path(back))}",
            media_type="text/html",
        )

    @post("/checkout/{intent:str}/decision", status_code=200)
    async def decide(
        self,
        intent: Annotated[str, Parameter(max_length=64)],
        data: JSONBody[Decision],
        request: Request[Any, Any, State],
    ) -> dict[str, str]:
        return {"status": await _decide(request.app.state, _intent(intent), data)}

    @post("/intents/{intent:str}/refunds", status_code=200)
    async def refund(
        self,
        intent: Annotated[str, Parameter(max_length=64)],
        data: JSONBody[SimRefundCreate],
        request: Request[Any, Any, State],
    ) -> SimRefund:
        _check_key(request)
        intent = _intent(intent)
        pool = _pool(request.app.state)
        async with pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "SELECT refund FROM simpay.refunds WHERE idempotency_key = $1",
                data.idempotency_key,
            )
            if done is not None:
                return SimRefund(refund=done, status="succeeded")
            row = await conn.fetchrow(
                "SELECT * FROM simpay.intents WHERE intent = $1 FOR UPDATE", intent
            )
            if row is None:
                raise NotFound(f"no intent {intent!r}")
            if row["status"] != "succeeded":
                return SimRefund(refund="", status="failed", error="nothing was captured")
            if data.amount <= 0 or row["refunded"] + data.amount > row["amount"]:
                return SimRefund(refund="", status="failed", error="more than was captured")
            ref = "sr_" + uuid.uuid4().hex
            await conn.execute(
                "INSERT INTO simpay.refunds (refund, intent, idempotency_key, amount)"
                " VALUES ($1, $2, $3, $4)",
                ref,
                intent,
                data.idempotency_key,
                data.amount,
            )
            await conn.execute(
                "UPDATE simpay.intents SET refunded = refunded + $2 WHERE intent = $1",
                intent,
                data.amount,
            )
        return SimRefund(refund=ref, status="succeeded")


async def _decide(state: State, intent: str, data: Decision) -> str:
    settings: Settings = state.settings
    pool = _pool(state)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM simpay.intents WHERE intent = $1 FOR UPDATE", intent
        )
        if row is None:
            raise NotFound(f"no intent {intent!r}")
        if row["status"] != "created" or row["mode"] == "timeout":
            raise Conflict(f"intent {intent} was decided already ({row['status']})")
        if data.mode == "timeout":
            # The approval never reaches the provider: nothing charged, nothing said.
            await conn.execute(
                "UPDATE simpay.intents SET mode = 'timeout' WHERE intent = $1", intent
            )
            return "lost"
        ok = data.decision == "approve"
        await conn.execute(
            "UPDATE simpay.intents SET status = $2, mode = $3 WHERE intent = $1",
            intent,
            "succeeded" if ok else "failed",
            data.mode,
        )
        body = msgspec.json.encode(
            SimCallback(
                id="se_" + uuid.uuid4().hex,
                type="payment.succeeded" if ok else "payment.failed",
                intent=intent,
                amount=row["amount"],
                currency=row["currency"],
            )
        )
        delay = settings.payments.sim_late_s if data.mode == "late" else 0.0
        copies = 2 if data.mode == "duplicate" else 1
        for _ in range(copies):
            await conn.execute(
                "INSERT INTO simpay.callbacks (event_ref, intent, body, url, due_at)"
                " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
                msgspec.json.decode(body)["id"],
                intent,
                body,
                settings.payments.sim_callback_url,
                delay,
            )
    return "approved" if ok else "declined"


async def deliver_due(state: State, client: httpx.AsyncClient, limit: int = 50) -> int:
    """Send the due callbacks once; a 2xx marks one delivered, anything else retries it
    with backoff (0.5 s doubling, at most a minute). Returns how many were answered 2xx."""
    settings: Settings = state.settings
    pool = _pool(state)
    delivered = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, body, url, attempts FROM simpay.callbacks"
            " WHERE delivered_at IS NULL AND due_at <= now() ORDER BY id"
            " LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
        for r in rows:
            body = bytes(r["body"])
            secret = settings.payments.sim_secret.split(",")[0]
            try:
                resp = await client.post(
                    r["url"],
                    content=body,
                    headers={
                        "content-type": "application/json",
                        SIM_SIGNATURE_HEADER: sign(secret, body),
                    },
                )
                code: int | None = resp.status_code
            except httpx.HTTPError as exc:
                log.info("callback %s not delivered: %s", r["id"], exc)
                code = None
            if code is not None and 200 <= code < 300:
                delivered += 1
                await conn.execute(
                    "UPDATE simpay.callbacks SET delivered_at = now(), attempts = attempts + 1,"
                    " last_status = $2 WHERE id = $1",
                    r["id"],
                    code,
                )
            else:
                delay = min(60.0, 0.5 * 2 ** r["attempts"])
                await conn.execute(
                    "UPDATE simpay.callbacks SET attempts = attempts + 1, last_status = $2,"
                    " due_at = now() + make_interval(secs => $3) WHERE id = $1",
                    r["id"],
                    code,
                    delay,
                )
    return delivered


def enabled(settings: Settings) -> bool:
    return settings.env != "prod" and settings.payments.provider == "simulated"


@contextlib.asynccontextmanager
async def simulator_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Delivers the simulated provider's callbacks while the API runs (dev and tests)."""
    state = app.state
    if not enabled(state.settings) or getattr(state, "db_pool", None) is None:
        yield
        return

    async def loop() -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                try:
                    await deliver_due(state, client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.info("simulated provider pass failed: %s", exc)
                await asyncio.sleep(0.2)

    task = asyncio.create_task(loop(), name="simpay-callbacks")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_route_handlers(settings: Settings) -> list[Any]:
    return [SimulatedProviderController] if enabled(settings) else []

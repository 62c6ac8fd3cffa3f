"""The PWA's payment step in a real browser: pay at the provider's checkout, follow the
payment into an order, cancel it and see the refund, the tickets marked refunded.

An API of its own with ``payments.required`` (so ``POST /orders`` answers 402 for a paid
hold) and the simulated provider it serves itself (its checkout page, its signed
callbacks to the same API), with the persister, the ticket issuer and the payments
worker (which pays refunds back) on topics of their own. Screenshots go to
``test-artifacts/pwa/`` as in test_pwa.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.e2e.test_pwa import (  # noqa: F401 (browser, chromium_path, pwa_events: fixtures)
    CONFIRM_TIMEOUT_S,
    PHONE,
    Page,
    System,
    api_get,
    browser,
    chromium_path,
    dev_token,
    hold_best,
    login,
    my_orders,
    new_buyer,
    open_page,
    pwa_events,
    running_system,
    wait_confirmed,
)
from tests.integration.api_servers import free_port, with_overrides

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The browser logs the 402 that sends a paid hold to the payment step.
EXPECTED_REFUSALS = (r"status of 402 \(Payment Required\)",)
EVENT = "obra-de-teatro-el-avaro-de-moliere"
PAY_WORKERS = {
    "workers.persister": "TB_WORKERS_PERSISTER_PORT",
    "workers.issuer": "TB_WORKERS_ISSUER_PORT",
    "workers.payments": "TB_WORKERS_PAYMENTS_PORT",
}


@pytest.fixture(scope="module")
def pay_system(
    settings: Settings,
    pg_dsn: str,
    pwa_events: dict[str, int],  # noqa: F811 (the imported fixture)
    chromium_path: str,  # noqa: F811
) -> Iterator[System]:
    """An API that asks for payment first, serving the simulated provider itself."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    paid = with_overrides(
        settings,
        payments={
            "required": True,
            "provider": "simulated",
            "sim_url": base,
            "sim_callback_url": f"{base}/api/v1/payments/webhooks/simulated",
        },
    )
    with running_system(paid, pg_dsn, pwa_events, "pwapay.", PAY_WORKERS, port) as system:
        missing = set(PAY_WORKERS) - set(system.workers)
        assert not missing, f"workers not started: {missing}"
        yield system


async def buy_until_checkout(p: Page, event_id: int, quantity: int) -> None:
    """Hold seats, press Buy: the order is refused (402) and the provider's page opens."""
    await p.page.goto(f"/#/events/{event_id}")
    await hold_best(p, quantity)
    await p.page.wait_for_selector("#hold-countdown")
    async with p.page.expect_response(
        lambda r: r.url.endswith("/api/v1/orders") and r.request.method == "POST"
    ) as refused:
        await p.page.click("#buy")
    assert (await refused.value).status == 402
    await p.page.wait_for_url(re.compile(r"/sim-pay/checkout/si_[0-9a-f]+\?return="))
    await p.page.wait_for_selector("#amount")
    assert "PEN" in await p.page.locator("#amount").inner_text()


async def decide(p: Page, decision: str) -> None:
    """Approve or decline at the checkout, then follow its link back to the app."""
    await p.page.click(f"button[value={decision}]")
    await p.page.wait_for_selector("#result")
    word = "approved" if decision == "approve" else "declined"
    assert word in await p.page.locator("#result").inner_text()
    await p.shot(f"checkout-{word}")
    await p.page.click("#return")
    await p.page.wait_for_url(re.compile(r"#/payments/"))


async def confirmed_with_payment(p: Page) -> str:
    order_id = await wait_confirmed(p)
    await p.page.wait_for_selector("#order-payment[data-status=captured]")
    assert "S/" in await p.page.locator("#order-payment").inner_text()
    return order_id


async def accept_next_dialog(p: Page) -> list[str]:
    seen: list[str] = []

    async def accept(dialog: Any) -> None:
        seen.append(dialog.message)
        await dialog.accept()

    p.page.once("dialog", lambda d: asyncio.ensure_future(accept(d)))
    return seen


async def test_pay_at_checkout_then_cancel_and_see_the_refund(
    browser: Any,  # noqa: F811
    pay_system: System,
) -> None:
    event_id = pay_system.event_ids[EVENT]
    async with open_page(browser, pay_system, "pay-approve", PHONE) as p:
        await login(p, new_buyer())
        await buy_until_checkout(p, event_id, 2)
        await p.shot("checkout")
        await decide(p, "approve")
        order_id = await confirmed_with_payment(p)
        await p.shot("order-paid")

        await p.page.click("#see-tickets")
        await p.page.wait_for_function(
            "() => document.querySelectorAll('#ticket-list .ticket[data-state=valid]').length === 2"
        )
        await p.page.wait_for_function(
            "() => document.querySelectorAll('#ticket-list .ticket-qr img').length === 2",
            timeout=CONFIRM_TIMEOUT_S * 1000,
        )
        await p.shot("tickets", full_page=True)

        await p.page.goto(f"/#/orders/{order_id}")
        await p.page.wait_for_selector("#cancel-order")
        dialogs = await accept_next_dialog(p)
        await p.page.click("#cancel-order")
        # Tickets revoked at once; the payments worker then pays the money back.
        await p.page.wait_for_function(
            "() => document.querySelectorAll('#order-tickets li[data-state=refunded]').length === 2"
        )
        await p.page.wait_for_selector(
            "#order-refunds li[data-kind=buyer_cancel][data-status=refunded]", timeout=20000
        )
        assert "Cancelar" in dialogs[0] or "¿Cancelar" in dialogs[0]
        assert await p.page.locator("#cancel-order").count() == 0
        assert "S/" in await p.page.locator("#order-refunded").inner_text()
        await p.shot("order-refunded", full_page=True)

        await p.page.goto("/#/tickets")
        await p.page.wait_for_function(
            "() => document.querySelectorAll('#ticket-list .ticket[data-state=refunded]').length"
            " === 2"
        )
        # No code is shown for a ticket the gate would refuse.
        assert await p.page.locator("#ticket-list .ticket-qr img").count() == 0
        assert "Reembolsada" in await p.page.locator("#ticket-list").inner_text()
        await p.shot("tickets-refunded", full_page=True)
        assert p.console_errors(allow=EXPECTED_REFUSALS) == []


async def test_declined_payment_places_nothing_and_the_buyer_pays_again(
    browser: Any,  # noqa: F811
    pay_system: System,
) -> None:
    event_id = pay_system.event_ids[EVENT]
    buyer = new_buyer()
    async with open_page(browser, pay_system, "pay-decline", PHONE, "en-US") as p:
        await login(p, buyer)
        await buy_until_checkout(p, event_id, 1)
        first = p.page.url
        await decide(p, "decline")
        await p.page.wait_for_selector("#payment-status[data-status=declined]")
        assert "Nothing was charged" in await p.page.locator("#payment-detail").inner_text()
        await p.page.wait_for_selector("#back-to-hold")
        await p.shot("declined")
        token = await p.page.evaluate("() => localStorage.getItem('tb.token')")
        assert my_orders(pay_system, token) == []

        # Again, with a new attempt (a new key, so a new payment and a new checkout).
        await p.page.click("#pay-again")
        await p.page.wait_for_url(re.compile(r"/sim-pay/checkout/si_"))
        assert p.page.url.split("?")[0] != first.split("?")[0]
        await decide(p, "approve")
        order_id = await confirmed_with_payment(p)
        await p.shot("paid-after-decline")
        assert [o["order_id"] for o in my_orders(pay_system, token)] == [order_id]

        # Its ticket is admitted at the gate: the buyer may no longer cancel, and says why.
        ticket = await wait_ticket_token(pay_system, token, order_id)
        gate = {"Authorization": f"Bearer {dev_token(pay_system, 'gate-pay', ['scanner'])}"}
        admitted = httpx.post(
            f"{pay_system.base_url}/api/v1/checkins",
            json={"token": ticket, "event_id": event_id, "gate": "main"},
            headers=gate,
            timeout=10,
        )
        assert admitted.status_code == 201, admitted.text
        await p.page.wait_for_selector("#cancel-order")
        await accept_next_dialog(p)
        await p.page.click("#cancel-order")
        await p.page.wait_for_selector("#cancel-error:has-text('cannot be cancelled')")
        assert "not refundable" in await p.page.locator("#cancel-error").inner_text()
        await p.page.wait_for_selector("#order-tickets li[data-state=used]")
        await p.shot("cancel-refused")
        assert p.console_errors(allow=(*EXPECTED_REFUSALS, r"status of 409")) == []


async def wait_ticket_token(system: System, token: str, order_id: str) -> str:
    """The signed token of the order's only ticket, once the issuer has signed it."""
    for _ in range(int(CONFIRM_TIMEOUT_S / 0.3)):
        tickets = api_get(system, f"/orders/{order_id}", token).json().get("tickets") or []
        if tickets:
            signed = api_get(system, f"/tickets/{tickets[0]['ticket_id']}", token).json()
            if signed.get("token"):
                return str(signed["token"])
        await asyncio.sleep(0.3)
    raise AssertionError(f"order {order_id}: no signed ticket")

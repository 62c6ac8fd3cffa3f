"""core.delivery and workers.ticket_pdf: the e-mail's words and the PDF, without I/O."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import zxingcpp
from PIL import Image
from pypdf import PdfReader

from core.delivery import OrderLetter, TicketLine, letter_text, money
from workers.ticket_pdf import tickets_pdf

LETTER = OrderLetter(
    order_id="5f9f9a46-ff4b-52dc-8d47-8e1cb64f654b",
    event_title="Ópera “La Traviata” 🎭",
    venue="Gran Teatro Nacional",
    starts_at=datetime(2026, 12, 24, 20, 0, tzinfo=UTC),
    tickets=(
        TicketLine("t-1", "101-A-1", "VIP", 12345, "PEN", "client:acme", "token-one"),
        TicketLine("t-2", "101-A-2", "VIP", 12345, "PEN", "client:acme", "token-two"),
    ),
    customer_ref="cust-4711",
)


def test_money_and_the_letter_in_both_languages() -> None:
    assert money(12345, "PEN") == "PEN 123.45" and money(5, "USD") == "USD 0.05"
    subject, body = letter_text(LETTER, "es")
    assert subject == "Tus entradas para Ópera “La Traviata” 🎭"
    assert "2026-12-24 20:00 UTC" in body and "Cliente: cust-4711" in body
    assert "Asiento 101-A-1 · VIP · PEN 123.45" in body
    subject, body = letter_text(LETTER, "en", resent=True)
    assert subject.startswith("Your tickets for") and body.startswith("Here are your tickets again")
    assert "Customer: cust-4711" in body


def test_pdf_has_a_page_and_a_readable_qr_per_ticket() -> None:
    reader = PdfReader(io.BytesIO(tickets_pdf(LETTER, "en")))
    assert len(reader.pages) == 2
    text = reader.pages[1].extract_text()
    assert "101-A-2" in text and "Customer" in text and "cust-4711" in text
    # Characters outside the PDF's Latin-1 fonts are replaced, never an error.
    assert "Ópera" in text
    codes = [
        r.text
        for page in reader.pages
        for image in page.images
        for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(image.data)))
    ]
    assert codes == ["token-one", "token-two"]

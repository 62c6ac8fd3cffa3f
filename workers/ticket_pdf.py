"""The tickets of one order as a PDF: one A4 page per ticket with its QR code (fpdf2).

The QR code encodes the ticket's signed token, exactly as ``GET /tickets/{id}/qr.png``
does, so a gate scanner reads a printed page like the phone's screen.
"""

from __future__ import annotations

import qrcode
import qrcode.constants
from fpdf import FPDF
from PIL.Image import Image

from core.delivery import Lang, OrderLetter, money, when, words

# The PDF's built-in fonts are Latin-1: Spanish is covered; anything else is replaced.
_ENCODING = "latin-1"


def _text(value: str) -> str:
    return value.encode(_ENCODING, "replace").decode(_ENCODING)


def _qr(token: str) -> Image:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    code.add_data(token)
    code.make(fit=True)
    image: Image = code.make_image(fill_color="black", back_color="white").get_image()
    return image


def tickets_pdf(letter: OrderLetter, lang: Lang) -> bytes:
    """One page per ticket: event, date, venue, seat, category, price, holder, QR code."""
    w = words(lang)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title(_text(w["subject"].format(title=letter.event_title)))
    pdf.set_creator("TicketBuster")
    pdf.set_lang(lang)
    for ticket in letter.tickets:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 22)
        pdf.cell(0, 12, "TicketBuster", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 8, _text(letter.event_title), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font("Helvetica", "", 12)
        rows = (
            (w["when"], when(letter.starts_at)),
            (w["where"], letter.venue),
            (w["seat"], ticket.seat_id),
            (w["category"], ticket.category),
            (w["price"], money(ticket.price_minor, ticket.currency)),
            (w["holder"], ticket.holder),
            *(((w["customer"], letter.customer_ref),) if letter.customer_ref else ()),
            (w["order"], letter.order_id),
            (w["ticket"], ticket.ticket_id),
        )
        for label, value in rows:
            pdf.set_font("Helvetica", "B", 12)
            pdf.cell(35, 7, _text(label))
            pdf.set_font("Helvetica", "", 12)
            pdf.cell(0, 7, _text(value), new_x="LMARGIN", new_y="NEXT")
        pdf.image(_qr(ticket.token), x=45, y=118, w=120, h=120)
        pdf.set_xy(pdf.l_margin, 245)
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, _text(w["gate"]), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())

"""TicketBuster HTTP API (Litestar): app factory, auth, rate limits, domain controllers."""

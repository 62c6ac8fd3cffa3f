"""TicketBuster's domain: wire types, rules, errors and the inventory gateway."""

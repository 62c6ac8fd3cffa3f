"""Live WebSocket channels: the seat map of an event and the buyer's own channel (area 7)."""

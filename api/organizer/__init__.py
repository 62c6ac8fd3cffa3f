"""The organizer API: organizations, venues, seat maps, events, reports, audit."""

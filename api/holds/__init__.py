"""Holds API: place, read, extend and release seat holds (area 1)."""

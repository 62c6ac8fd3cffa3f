"""The catalog API: categories, events (cursor pages with live availability) and seat maps."""

from api.catalog.controllers import CatalogController

__all__ = ["CatalogController"]

"""Numbered plain-SQL migrations (``NNNN_name.sql``), their runner and the seed.

``python -m migrations up`` applies pending migrations; ``python -m migrations seed``
loads the demo catalog and its inventory. See ``migrations/runner.py``.
"""

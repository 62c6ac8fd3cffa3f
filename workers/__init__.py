"""Background workers of the purchase saga: persister, ticket issuer, notifier, expirer.

Each is a FastStream app built by a ``create_*`` factory and started with
``uv run python -m workers.<name>``; each serves /healthz, /readyz and /metrics on
its own port (``TB_WORKERS_<NAME>_PORT``).
"""

"""What the API refuses to start with, checked before anything else is imported.

``python -m api`` runs ``check_api_settings`` in its parent process, before Granian forks
the workers and before the multiprocess metrics directory is prepared: this module
imports no metrics and no app.
"""

from __future__ import annotations

import ipaddress

from core.settings import Settings, SettingsError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(spec: str) -> list[Network]:
    """``TB_API_TRUSTED_PROXIES``: IPs or CIDRs, comma-separated; ``none`` (or empty): no
    proxy is trusted. ValueError for anything else."""
    if spec.strip().lower() == "none":
        return []
    return [ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()]


def split_list(value: str) -> list[str]:
    """A comma-separated setting's items, trimmed, empty ones dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def check_api_settings(settings: Settings) -> None:
    """What the API refuses to start with: a SettingsError naming the variable."""
    api = settings.api
    try:
        parse_trusted_proxies(api.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"TB_API_TRUSTED_PROXIES: {exc}") from None
    if settings.env != "prod":
        return
    if settings.auth.dev_issuer_enabled:
        raise SettingsError(
            "TB_AUTH_DEV_ISSUER_ENABLED: the built-in dev issuer must be off when TB_ENV=prod"
        )
    if not api.trusted_proxies.strip():
        # Left empty behind an ingress, every buyer would share the ingress pod's per-IP
        # rate limit and live-socket cap.
        raise SettingsError(
            "TB_API_TRUSTED_PROXIES: must be set when TB_ENV=prod: the IPs or CIDRs of the "
            "proxies in front of the API (the ingress controller's pods), or 'none' when "
            "clients connect directly"
        )
    if not settings.tickets.public_keys_path.strip():
        raise SettingsError(
            "TB_TICKETS_PUBLIC_KEYS_PATH: must be set when TB_ENV=prod: the ticket public "
            "key(s) the API publishes; only the issuer mounts the private signing key"
        )
    loopback = [o for o in split_list(api.cors_origins) if "127.0.0.1" in o or "localhost" in o]
    if loopback:
        raise SettingsError(
            f"TB_API_CORS_ORIGINS: {', '.join(loopback)} is a development origin; name the "
            "PWA's public origin(s) when TB_ENV=prod"
        )

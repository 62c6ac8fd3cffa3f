"""Who may call what: bearer JWT validation, the ``Principal``, guards and the dev issuer."""

from api.auth.principal import (
    Principal,
    provide_optional_principal,
    provide_principal,
    requires_auth,
    requires_role,
    requires_role_or_scope,
    requires_scope,
)

__all__ = [
    "Principal",
    "provide_optional_principal",
    "provide_principal",
    "requires_auth",
    "requires_role",
    "requires_role_or_scope",
    "requires_scope",
]

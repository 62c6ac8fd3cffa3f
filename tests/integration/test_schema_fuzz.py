"""Property-based run against ``/schema``: schemathesis generates requests (valid and
invalid) for every documented operation of a real Granian server and checks that nothing
answers 5xx and that every response matches the schema (status, content type, body).

Marked slow. Its own database (migrated by the real runner, one small event seeded and
loaded into the Redis Cluster), dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.settings import Settings
from tests.integration.api_servers import (
    GranianServer,
    granian_server,
    one_event_catalog,
    with_overrides,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("TB_FUZZ_EXAMPLES", "30"))  # more: a deeper search
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(
    services: dict[str, str], settings: Settings, tmp_path_factory: Any
) -> Iterator[GranianServer]:
    with one_event_catalog(services["TB_DATABASE_URL"], settings) as catalog:
        s = with_overrides(
            settings,
            database={"url": catalog.dsn},
            # Generous limits: the run must exercise handlers, not the limiter.
            api={"rate_limit_per_ip": 1_000_000, "rate_limit_per_user": 1_000_000},
        )
        log = Path(tmp_path_factory.mktemp("fuzz")) / "granian.log"
        with granian_server(s, log) as server:
            server.event_id = catalog.event_id  # type: ignore[attr-defined]
            yield server


@pytest.fixture(scope="module")
def fuzz_token(fuzz_server: GranianServer) -> str:
    response = httpx.post(
        fuzz_server.base_url + "/api/v1/auth/dev-token",
        json={"sub": f"fuzz-{secrets.token_hex(4)}", "roles": ["buyer", "scanner", "admin"]},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    server: GranianServer,
    token: str,
    statuses: Counter[int],
) -> None:
    event_id: int = server.event_id  # type: ignore[attr-defined]

    @given(case=operation.as_strategy(generation_mode=mode), real_event=st.booleans())
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, real_event: bool) -> None:
        # Random ids almost never name an event: half the valid cases use the seeded one,
        # so seat maps, holds and their conflicts are reached too.
        if (
            real_event
            and mode == GenerationMode.POSITIVE
            and "event_id" in (case.path_parameters or {})
        ):
            case.path_parameters["event_id"] = event_id
        response = case.call_and_validate(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
        )
        statuses[response.status_code] += 1

    run()


def test_no_5xx_and_responses_match_the_schema(fuzz_server: GranianServer, fuzz_token: str) -> None:
    # (schemathesis' lazy pytest loader does not work with pytest 9, so the operations are
    # driven here; every failure is collected, then reported together.)
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/schema/openapi.json")
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", Counter())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(operation, mode, fuzz_server, fuzz_token, seen)
            except Unsatisfiable:
                continue  # no invalid input exists (an operation without parameters)
            except Exception as exc:
                failures.append(
                    f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc}"
                )
    for name, seen in sorted(statuses.items()):
        print(f"{name}: {dict(sorted(seen.items()))}")
    # The run reached the handlers, not only the validators: most operations answered 2xx
    # at least once, and the catalog was really read.
    answered = [name for name, seen in statuses.items() if any(200 <= c < 300 for c in seen)]
    assert len(statuses) >= 20 and len(answered) >= len(statuses) // 2, statuses
    assert statuses["GET /api/v1/events"][200] > 0
    assert statuses["GET /api/v1/events/{event_id}/seats"][200] > 0
    assert not failures, "\n\n".join(failures)

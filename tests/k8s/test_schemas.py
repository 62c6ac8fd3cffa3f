"""Every rendered resource is valid against its schema, strictly.

Built-in kinds: kubernetes-validate in strict mode (unknown fields fail), for
the oldest Kubernetes we support and the newest it knows. Custom resources
(Strimzi, CloudNativePG, KEDA, Prometheus Operator, Redis operator):
check-jsonschema against the CRD schemas vendored in k8s/crds/.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import kubernetes_validate
import pytest

from tests.k8s.conftest import K8S, OVERLAYS, Doc, named

# docs/OPERATIONS.md: the oldest Kubernetes these manifests target.
MIN_KUBERNETES = "1.31.0"
CRDS = K8S / "crds"
# CRD patterns are RE2 regular expressions; check-jsonschema reads them as
# ECMA-262 (the one RE2-only pattern is rewritten in k8s/crds/, see its README).
REGEX: tuple[str, ...] = ()


def schema_for(doc: Doc) -> Path | None:
    """The vendored schema of a custom resource (None for a built-in kind)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    if "." not in group or group.endswith(".k8s.io"):
        return None
    return CRDS / group / f"{doc['kind'].lower()}_{version}.json"


def check_jsonschema(
    schema: Path, docs: list[Doc], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    files = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"{i}-{doc['kind']}-{doc['metadata']['name']}.json"
        path.write_text(json.dumps(doc))
        files.append(str(path))
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *REGEX, "--schemafile", str(schema), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("k8s_version", [MIN_KUBERNETES, kubernetes_validate.latest_version()])
def test_builtin_kinds_strict(
    rendered: dict[str, list[Doc]], overlay: str, k8s_version: str
) -> None:
    checked = 0
    for doc in rendered[overlay]:
        if schema_for(doc) is not None:
            continue
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']} (k8s {k8s_version})"
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 20


def test_custom_resources_against_vendored_crds(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    """One check-jsonschema run per schema, over the resources of every overlay."""
    by_schema: dict[Path, list[Doc]] = defaultdict(list)
    for overlay in OVERLAYS:
        kinds = set()
        for doc in rendered[overlay]:
            schema = schema_for(doc)
            if schema is not None:
                assert schema.exists(), f"no vendored schema for {doc['apiVersion']} {doc['kind']}"
                by_schema[schema].append(doc)
                kinds.add(schema.stem)
        assert {
            "kafka_v1",
            "kafkanodepool_v1",
            "kafkatopic_v1",
            "cluster_v1",
            "pooler_v1",
            "scaledobject_v1alpha1",
            "servicemonitor_v1",
            "podmonitor_v1",
            "prometheusrule_v1",
            "rediscluster_v1beta2",
        } <= kinds, overlay
    for schema, docs in sorted(by_schema.items()):
        proc = check_jsonschema(schema, docs, tmp_path)
        assert proc.returncode == 0, f"{schema.relative_to(K8S)}\n{proc.stdout}{proc.stderr}"


def test_a_misspelt_field_is_caught(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    """The checks above can fail: a typo in a custom or a built-in resource is rejected."""
    scaled = copy.deepcopy(named(rendered["prod"], "ScaledObject", "ticketbuster-persister"))
    scaled["spec"]["maxReplicaCounts"] = scaled["spec"].pop("maxReplicaCount")
    schema = schema_for(scaled)
    assert schema is not None
    assert check_jsonschema(schema, [scaled], tmp_path).returncode != 0

    deployment = copy.deepcopy(named(rendered["prod"], "Deployment", "ticketbuster-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_KUBERNETES, strict=True)


def test_vendored_schemas_are_valid_json_schema() -> None:
    schemas = sorted(str(p) for p in CRDS.rglob("*.json"))
    assert len(schemas) >= 10
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *REGEX, "--check-metaschema", *schemas],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

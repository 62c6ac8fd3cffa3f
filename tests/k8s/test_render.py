"""The overlays render, and what they render keeps the deployment's promises.

Every pod is locked down and probed, every app pod has a PDB and a network
policy, workers never scale past their topic's partitions, and the settings in
the ConfigMap are ones the code really reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from core import orders
from core.settings import Settings, load_settings
from core.support import TOPIC_REISSUE
from tests.k8s.conftest import (
    K8S,
    OVERLAYS,
    ROOT,
    Doc,
    config_data,
    named,
    of_kind,
    pod_spec,
    render,
)

APP_COMPONENTS = {"api", "persister", "issuer", "notifier", "expirer", "admitter", "mailer"}
WORKERS = ("persister", "issuer", "notifier", "expirer", "admitter", "mailer")
TOPICS = (
    orders.TOPIC_PLACED,
    orders.TOPIC_CONFIRMED,
    orders.TOPIC_REJECTED,
    orders.TOPIC_DLQ,
    orders.TOPIC_TICKETS_ISSUED,
    orders.TOPIC_NOTIFICATIONS,
    TOPIC_REISSUE,
)


def app_workloads(docs: list[Doc]) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "ticketbuster"
    ]


def test_base_renders() -> None:
    kinds = {d["kind"] for d in render(K8S / "base")}
    assert {"Deployment", "Job", "Service", "Ingress", "KafkaTopic", "ScaledObject"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_piece(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {
        ("Namespace", "ticketbuster"),
        ("Deployment", "ticketbuster-api"),
        ("Service", "ticketbuster-api"),
        ("Ingress", "ticketbuster-api"),
        ("HorizontalPodAutoscaler", "ticketbuster-api"),
        ("Job", "ticketbuster-migrations"),
        ("Kafka", "tb-kafka"),
        ("RedisCluster", "tb-redis"),
        ("Cluster", "tb-pg"),
        ("Pooler", "tb-pg-pooler-rw"),
        ("ServiceMonitor", "ticketbuster-api"),
        ("PodMonitor", "ticketbuster-workers"),
        ("PrometheusRule", "ticketbuster"),
        ("ConfigMap", "ticketbuster-grafana-dashboards"),
    } | {("Deployment", f"ticketbuster-{w}") for w in WORKERS}
    assert expected <= names, expected - names
    assert of_kind(docs, "KafkaNodePool"), "Strimzi KRaft needs at least one KafkaNodePool"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "ticketbuster", doc["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(rendered: dict[str, list[Doc]], overlay: str) -> None:
    workloads = app_workloads(rendered[overlay])
    assert len(workloads) == 9  # the API, seven workers, the migrations Job
    for doc in workloads:
        spec = pod_spec(doc)
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["runAsUser"] != 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        mounts_ok = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), where
            assert "memory" in res["limits"], where
            # A read-only root needs writable emptyDirs where Python and prometheus_client write.
            writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in mounts_ok}
            assert "/tmp" in writable, where
            env = {e["name"]: e for e in c.get("env", [])}
            # prometheus_client goes multiprocess when the variable merely exists:
            # only the API (several Granian workers) sets it, to a fresh emptyDir.
            if doc["metadata"]["name"] == "ticketbuster-api":
                assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] in writable, where
            else:
                assert "PROMETHEUS_MULTIPROC_DIR" not in env, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_is_probed(rendered: dict[str, list[Doc]], overlay: str) -> None:
    for doc in of_kind(app_workloads(rendered[overlay]), "Deployment"):
        (c,) = pod_spec(doc)["containers"]
        ports = {p["name"] for p in c["ports"]}
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["port"] in ports, (doc["metadata"]["name"], probe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_run_modules_that_exist(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """Each pod runs `python -m <module>` of the one image, and the module is in the repo."""
    images = set()
    for doc in app_workloads(rendered[overlay]):
        (c,) = pod_spec(doc)["containers"]
        images.add(c["image"])
        assert c["command"][:2] == ["python", "-m"], c["command"]
        module = c["command"][2]
        path = ROOT.joinpath(*module.split("."))
        assert (path / "__main__.py").exists() or path.with_suffix(".py").exists(), (
            f"{doc['metadata']['name']} runs `python -m {module}`, which is not in the repo"
        )
    assert len(images) == 1, images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_is_settings_the_code_reads(rendered: dict[str, list[Doc]], overlay: str) -> None:
    data = config_data(rendered[overlay])
    fields = {"TB_ENV", "TB_DATABASE_URL", "TB_REDIS_NODES"}
    for section in msgspec.structs.fields(Settings):
        if section.name == "env":
            continue
        for f in msgspec.structs.fields(section.type):
            fields.add(f"TB_{section.name}_{f.name}".upper())
    unknown = sorted(k for k in data if k.startswith("TB_") and k not in fields)
    assert not unknown, f"{overlay}: settings no code reads: {unknown}"
    # Parsing them is what every pod does first: it must not fail fast.
    env = {k: v for k, v in data.items() if v != ""}
    settings = load_settings(env)
    assert settings.api.host == "0.0.0.0"
    assert settings.workers.http_host == "0.0.0.0"
    assert not any(re.search(r"passw|secret|token", k, re.I) for k in data), sorted(data)


def test_prod_settings(rendered: dict[str, list[Doc]]) -> None:
    settings = load_settings(config_data(rendered["prod"]))
    assert settings.env == "prod"
    assert settings.kafka.idempotent_producer is True
    assert settings.auth.dev_issuer_enabled is False
    # The per-cluster placeholder is caught at start, naming the variable to set.
    from api.startup import check_api_settings
    from core.settings import SettingsError

    with pytest.raises(SettingsError, match="TB_API_TRUSTED_PROXIES"):
        check_api_settings(settings)
    filled = {**config_data(rendered["prod"]), "TB_API_TRUSTED_PROXIES": "10.42.0.0/16"}
    assert filled["TB_TICKETS_PUBLIC_KEYS_PATH"]  # the API reads public keys only
    check_api_settings(load_settings(filled))


def test_dev_settings(rendered: dict[str, list[Doc]]) -> None:
    env = {k: v for k, v in config_data(rendered["dev"]).items() if v != ""}
    assert load_settings(env).env == "dev"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_ports_match_settings(rendered: dict[str, list[Doc]], overlay: str) -> None:
    env = {k: v for k, v in config_data(rendered[overlay]).items() if v != ""}
    settings = load_settings(env)
    for worker in WORKERS:
        (c,) = pod_spec(named(rendered[overlay], "Deployment", f"ticketbuster-{worker}"))[
            "containers"
        ]
        (port,) = c["ports"]
        assert port["name"] == "http-metrics"
        assert port["containerPort"] == getattr(settings.workers, f"{worker}_port"), worker
    (api,) = pod_spec(named(rendered[overlay], "Deployment", "ticketbuster-api"))["containers"]
    assert api["ports"][0]["containerPort"] == settings.api.port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_in_the_repo(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    assert not of_kind(docs, "Secret"), "Secrets are created out of band, never committed"
    refs = set()
    for doc in app_workloads(docs):
        spec = pod_spec(doc)
        for c in spec["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSW|SECRET|TOKEN|KEY", e["name"]):
                    assert "valueFrom" in e, e
                if "secretKeyRef" in e.get("valueFrom", {}):
                    refs.add(e["valueFrom"]["secretKeyRef"]["name"])
        refs |= {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    # The CloudNativePG app secret, written by the operator, the ticket key, the
    # waiting rooms' keys (admission signing key, pseudonym key) and the mailer's SMTP
    # credentials, and the payment provider's (Stripe) keys.
    assert refs == {
        "tb-pg-app",
        "ticketbuster-payments",
        "ticketbuster-ticket-signing",
        "ticketbuster-queue",
        "ticketbuster-smtp",
    }
    # The ticket key only the issuer mounts: the API has the public keys (a ConfigMap).
    api = pod_spec(named(docs, "Deployment", "ticketbuster-api"))
    assert "ticketbuster-ticket-signing" not in {
        v["secret"]["secretName"] for v in api["volumes"] if "secret" in v
    }
    assert {v["configMap"]["name"] for v in api["volumes"] if "configMap" in v} >= {
        "ticketbuster-ticket-public-keys"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_app_pod_has_pdb_and_network_policy(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]

    def selects(selector: Doc, labels: dict[str, str]) -> bool:
        match = selector.get("matchLabels", {})
        return all(labels.get(k) == v for k, v in match.items())

    policies = of_kind(docs, "NetworkPolicy")
    default_deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"]
        and not p["spec"].get("ingress")
    ]
    assert default_deny, "a default-deny ingress policy for the namespace"
    for doc in of_kind(app_workloads(docs), "Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        name = doc["metadata"]["name"]
        pdbs = [
            p
            for p in of_kind(docs, "PodDisruptionBudget")
            if selects(p["spec"]["selector"], labels)
        ]
        assert len(pdbs) == 1, name
        allowed_in = [
            p
            for p in policies
            if p["spec"]["podSelector"]
            and selects(p["spec"]["podSelector"], labels)
            and "Ingress" in p["spec"]["policyTypes"]
        ]
        assert allowed_in, f"{name}: no policy lets Prometheus (or the ingress) in"
        egress = [
            p
            for p in policies
            if selects(p["spec"]["podSelector"], labels) and "Egress" in p["spec"]["policyTypes"]
        ]
        assert egress, f"{name}: egress is not restricted"
        # Who talks to the payment provider (Stripe, HTTPS) may leave on 443: the API
        # (payments) and the payments worker (refunds); the other workers may not.
        https = any(
            port.get("port") == 443
            for p in egress
            for rule in p["spec"].get("egress", [])
            for port in rule.get("ports", [])
        )
        component = labels.get("app.kubernetes.io/component")
        assert https == (component in ("api", "payments")), f"{name}: HTTPS egress {https}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_match_settings_and_scaling(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    settings = load_settings({k: v for k, v in config_data(docs).items() if v != ""})
    topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    expected = {orders.topic(settings.kafka.topic_prefix, t) for t in TOPICS}
    assert set(topics) == expected
    pools = of_kind(docs, "KafkaNodePool")
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "tb-kafka"
        assert topic["spec"]["partitions"] == settings.kafka.partitions, name
        assert topic["spec"]["replicas"] <= brokers, name
        assert topic["spec"]["config"]["min.insync.replicas"] <= topic["spec"]["replicas"]

    scaled = of_kind(docs, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        "ticketbuster-persister",
        "ticketbuster-issuer",
        "ticketbuster-notifier",
    }
    for so in scaled:
        target = named(docs, "Deployment", so["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "KEDA owns the replica count"
        assert so["spec"]["minReplicaCount"] >= 1
        assert so["spec"]["fallback"]["replicas"] <= so["spec"]["maxReplicaCount"]
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert meta["bootstrapServers"] == settings.kafka.bootstrap
            assert meta["topic"] in topics, meta["topic"]
            partitions = topics[meta["topic"]]["spec"]["partitions"]
            # KEDA will not usefully scale a group past the topic's partitions.
            assert so["spec"]["maxReplicaCount"] <= partitions, (so["metadata"]["name"], meta)
            assert meta["allowIdleConsumers"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_hpa_scales_on_cpu_and_rps(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    hpa = named(docs, "HorizontalPodAutoscaler", "ticketbuster-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ticketbuster-api"
    assert "replicas" not in named(docs, "Deployment", "ticketbuster-api")["spec"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    pods_metric = metrics["Pods"]["pods"]["metric"]["name"]
    # The metric must be one prometheus-adapter is configured to serve.
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    assert pods_metric in served
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_prod_is_bigger_than_dev(rendered: dict[str, list[Doc]]) -> None:
    def replicas(overlay: str, kind: str, name: str, field: str) -> int:
        value: int = named(rendered[overlay], kind, name)["spec"][field]
        return value

    assert replicas("prod", "HorizontalPodAutoscaler", "ticketbuster-api", "minReplicas") >= 2
    assert replicas("dev", "HorizontalPodAutoscaler", "ticketbuster-api", "minReplicas") == 1
    assert replicas("prod", "Cluster", "tb-pg", "instances") >= 3
    assert replicas("dev", "Cluster", "tb-pg", "instances") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_is_tls_through_cert_manager(rendered: dict[str, list[Doc]], overlay: str) -> None:
    ing = named(rendered[overlay], "Ingress", "ticketbuster-api")
    assert "cert-manager.io/cluster-issuer" in ing["metadata"]["annotations"]
    hosts = {h for t in ing["spec"]["tls"] for h in t["hosts"]}
    assert {r["host"] for r in ing["spec"]["rules"]} <= hosts


def test_vendored_crds_are_documented() -> None:
    readme = (K8S / "crds" / "README.md").read_text()
    for schema in sorted((K8S / "crds").rglob("*.json")):
        rel = schema.relative_to(K8S / "crds").as_posix()
        assert rel in readme, f"{rel} is not listed in k8s/crds/README.md"


def test_no_machine_paths_or_private_hosts() -> None:
    for path in [*sorted(Path(K8S).rglob("*.yaml")), ROOT / "Dockerfile"]:
        text = path.read_text()
        assert "/work/" not in text and "/home/" not in text, path
        assert not re.search(r"\b(10|192\.168|172\.(1[6-9]|2\d|3[01]))\.\d+\.\d+", text), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_consumer_groups_are_the_workers_groups(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    """KEDA must measure the lag of the group the worker really consumes with.

    The module's GROUP constant is read from its source: importing workers and
    api into one process would register their metrics twice.
    """
    import ast

    def group_of(path: Path) -> str | None:
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "GROUP" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                return str(node.value.value)
        return None

    docs = rendered[overlay]
    prefix = load_settings({k: v for k, v in config_data(docs).items() if v}).kafka.topic_prefix
    for so in of_kind(docs, "ScaledObject"):
        worker = so["spec"]["scaleTargetRef"]["name"].removeprefix("ticketbuster-")
        source = ROOT / "workers" / f"{worker}.py"
        if not source.exists():
            continue  # test_commands_run_modules_that_exist reports the missing module
        group = group_of(source)
        assert group is not None, f"workers.{worker} has no GROUP constant to check KEDA against"
        for trigger in so["spec"]["triggers"]:
            assert trigger["metadata"]["consumerGroup"] == f"{prefix}{group}", worker


def test_database_bootstrap_creates_the_migrations_extensions(
    rendered: dict[str, list[Doc]],
) -> None:
    """The app user owns its database but is no superuser: extensions come from bootstrap."""
    wanted = {
        name.lower()
        for sql in sorted((ROOT / "migrations").glob("*.sql"))
        for name in re.findall(r"CREATE EXTENSION IF NOT EXISTS (\w+)", sql.read_text(), re.I)
    }
    for overlay in OVERLAYS:
        initdb = named(rendered[overlay], "Cluster", "tb-pg")["spec"]["bootstrap"]["initdb"]
        created = {
            m.lower()
            for stmt in initdb.get("postInitApplicationSQL", [])
            for m in re.findall(r"CREATE EXTENSION IF NOT EXISTS (\w+)", stmt, re.I)
        }
        assert wanted <= created, wanted - created


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrate_step_applies_alone(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """`kubectl apply -l ticketbuster.dev/release-step=migrate` gets the Job and its settings."""
    step = [
        d
        for d in rendered[overlay]
        if d["metadata"].get("labels", {}).get("ticketbuster.dev/release-step") == "migrate"
    ]
    assert sorted(d["kind"] for d in step) == ["ConfigMap", "Job"]
    config = next(d for d in step if d["kind"] == "ConfigMap")
    job = next(d for d in step if d["kind"] == "Job")
    (c,) = pod_spec(job)["containers"]
    assert c["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]

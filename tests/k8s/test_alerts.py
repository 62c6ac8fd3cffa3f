"""The alerts are valid Prometheus rules, fire when they should, and are documented.

`promtool check rules` (syntax, templates) and `promtool test rules` (each
alert fires on a synthetic incident and stays quiet otherwise; cases in
alerts_test.yaml) run on the PrometheusRule's groups. promtool comes from
Debian's prometheus package (.ci/install-tools.sh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s import promql
from tests.k8s.conftest import ROOT

# The metric contract (team brief) and Litestar's PrometheusMiddleware
# (prefix "litestar", app_name label "ticketbuster"). Dashboards and alerts may
# read nothing else; test_metrics_real.py checks the code really exports them.
CONTRACT = {
    "ticketbuster_holds_total",
    "ticketbuster_hold_duration_seconds",
    "ticketbuster_orders_total",
    "ticketbuster_purchase_duration_seconds",
    "ticketbuster_consumer_lag",
    "ticketbuster_persister_batch_size",
    "ticketbuster_persister_batch_duration_seconds",
    "ticketbuster_persister_tickets_total",
    "ticketbuster_reconciler_mismatches",
    "ticketbuster_oversold_seats",
    "ticketbuster_seats",
    "ticketbuster_ws_connections",
    "ticketbuster_ws_frames_total",
    "ticketbuster_checkins_total",
    "ticketbuster_gate_scans_total",
    # The waiting rooms (workers/admitter.py): the organizer's view of a queued on-sale.
    "ticketbuster_queue_waiting",
    "ticketbuster_queue_admitted",
    "ticketbuster_queue_rate_per_minute",
    "ticketbuster_queue_sold_out",
    "litestar_requests_total",
    "litestar_request_duration_seconds",
    "litestar_requests_in_progress",
    "litestar_requests_error_total",
}
HISTOGRAMS = {
    "ticketbuster_hold_duration_seconds",
    "ticketbuster_purchase_duration_seconds",
    "ticketbuster_persister_batch_size",
    "ticketbuster_persister_batch_duration_seconds",
    "litestar_request_duration_seconds",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run .ci/install-tools.sh (Debian package prometheus)")
    return path


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": promql.rule_groups()}, sort_keys=False))
    return path


def test_promtool_check_rules(rules_file: Path) -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests(rules_file: Path) -> None:
    cases = rules_file.parent / "alerts_test.yaml"
    shutil.copy(Path(__file__).with_name("alerts_test.yaml"), cases)
    proc = subprocess.run([promtool(), "test", "rules", str(cases)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    cases = yaml.safe_load(Path(__file__).with_name("alerts_test.yaml").read_text())
    tested = {
        t["alertname"]
        for case in cases["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    alerts = {r["alert"] for g in promql.rule_groups() for r in g["rules"] if "alert" in r}
    assert alerts == tested


def test_the_required_alerts_exist() -> None:
    exprs = promql.rule_exprs()
    assert "TicketBusterOversold" in exprs and "> 0" in exprs["TicketBusterOversold"]
    for alert in (
        "TicketBusterHighErrorRate",
        "TicketBusterHighLatencyP99",
        "TicketBusterConsumerLagHigh",
    ):
        assert alert in exprs


def test_alerts_are_documented_with_a_runbook() -> None:
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", operations, re.M)
    }
    for group in promql.rule_groups():
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
            assert anchor == rule["alert"].lower()
            assert anchor in anchors, f"docs/OPERATIONS.md has no section {rule['alert']}"


def test_dashboards_and_alerts_read_only_contract_metrics() -> None:
    used = promql.exported_names_used()
    unknown = {
        name: sorted(where)
        for name, where in used.items()
        if promql.family(name, HISTOGRAMS) not in CONTRACT
    }
    assert not unknown, json.dumps(unknown, indent=1)
    # The list of what the flash-sale overview shows.
    families = {promql.family(n, HISTOGRAMS) for n in used}
    assert families >= CONTRACT - {"litestar_requests_error_total"}


def test_the_name_extractor_finds_metrics() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x="y{z}"}[5m])))'
        " / on () group_left sum without (pod) (b_total offset 5m) and c:rec or vector(0)"
    )
    assert promql.metric_names(expr) == {"a_seconds_bucket", "b_total", "c:rec"}


def test_dashboard_is_provisionable() -> None:
    dashboards = promql.dashboards()
    assert "flash-sale-overview.json" in dashboards
    dash = dashboards["flash-sale-overview.json"]
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for wanted in (
        "oversold",
        "requests / s",
        "p99",
        "holds / s",
        "sold",
        "remaining",
        "orders",
        "consumer lag",
        "persister throughput",
    ):
        assert wanted in titles, wanted
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]

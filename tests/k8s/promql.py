"""The metric names that PromQL expressions in k8s/monitoring/ read.

Good enough for our dashboards and rules: strip strings, label matchers,
ranges and grouping clauses, then every identifier left that is not a function,
keyword or number is a metric name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
# Series Prometheus makes itself, not any target.
PROMETHEUS_SERIES = {"ALERTS", "ALERTS_FOR_STATE", "up", "scrape_duration_seconds"}
# Histogram series and the family they belong to.
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Every metric (or recording rule) name in one PromQL expression."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)
    names = set()
    # Not preceded by a digit: "5m" is a duration, "1e3" a number.
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function call
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def family(name: str, histograms: set[str]) -> str:
    """The exposition family of a series name (``x_bucket`` -> ``x`` for a histogram)."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return name[: -len(suffix)]
    return name


def prometheus_rule() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return doc


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups, i.e. a Prometheus rule file's ``groups``."""
    groups: list[dict[str, Any]] = prometheus_rule()["spec"]["groups"]
    return groups


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(MONITORING.glob("dashboards/*.json"))}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_exprs() -> dict[str, str]:
    """Where -> expr, for every panel query, variable and annotation of every dashboard."""
    exprs: dict[str, str] = {}
    for file, dash in dashboards().items():
        for panel in _panels(dash["panels"]):
            for target in panel.get("targets", []):
                exprs[f"{file} / {panel['title']} / {target['refId']}"] = target["expr"]
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("query")
            if isinstance(query, dict):
                # label_values(metric, label) names its metric as the first argument.
                inner = re.match(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", query["query"])
                if inner:
                    exprs[f"{file} / variable {var['name']}"] = inner.group(1)
        for ann in dash.get("annotations", {}).get("list", []):
            if "expr" in ann:
                exprs[f"{file} / annotation {ann['name']}"] = ann["expr"]
    return exprs


def rule_exprs() -> dict[str, str]:
    exprs = {}
    for group in rule_groups():
        for rule in group["rules"]:
            exprs[rule.get("alert") or rule["record"]] = rule["expr"]
    return exprs


def recorded_names() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def exported_names_used() -> dict[str, set[str]]:
    """Metric name -> where it is used, over every dashboard and rule, excluding
    recording rules (defined here) and series Prometheus makes itself."""
    used: dict[str, set[str]] = {}
    own = recorded_names() | PROMETHEUS_SERIES
    for where, expr in {**dashboard_exprs(), **rule_exprs()}.items():
        for name in metric_names(expr) - own:
            used.setdefault(name, set()).add(where)
    return used

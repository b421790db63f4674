"""``deploy/observability/``: every metric the dashboard and the alert rules use exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

DIR = Path(__file__).resolve().parents[1] / "deploy" / "observability"
METRIC = re.compile(r"\bipaas_[a-z_]+\b")


def _exprs() -> list[str]:
    dashboard = json.loads((DIR / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = (DIR / "alerts.yml").read_text()
    exprs.append(rules)
    return exprs


async def test_every_metric_used_is_exposed(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    # A labelled metric has samples only once a label set was used; its HELP and TYPE
    # lines are there from the start, so the family's sample names count too.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        exposed |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
    used = {name for expr in _exprs() for name in METRIC.findall(expr)}
    assert used, "no metric found in deploy/observability"
    assert used <= exposed, sorted(used - exposed)


def test_alert_rules_name_the_four_conditions() -> None:
    rules = (DIR / "alerts.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    for wanted in ("QueueBacklog", "ErrorRate", "CircuitsOpen", "StuckExecutions"):
        assert any(wanted in a for a in alerts), wanted

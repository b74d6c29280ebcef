"""The ready-made monitoring in monitoring/ (README, "Monitoring"): the alerting rules load
and pass their unit tests in promtool, the example Prometheus configuration loads them, and
every query of the Grafana dashboard is PromQL that Prometheus parses. That they name only
metrics the service exposes is checked on a real scrape (tests/integration/test_serve.py)."""

from __future__ import annotations

import json

import yaml

from tests.helpers.monitoring import (
    CONFIG,
    DASHBOARD,
    RULE_TESTS,
    RULES,
    dashboard_exprs,
    metric_names,
    rule_exprs,
    run_promtool,
)


def test_the_alerting_rules_load():
    assert "SUCCESS: 7 rules found" in run_promtool("check", "rules", RULES).stdout


def test_the_alerting_rules_pass_their_unit_tests():
    run_promtool("test", "rules", RULE_TESTS)


def test_every_alert_has_a_unit_test():
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
              for rule in group["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == tested


def test_the_example_configuration_scrapes_the_job_the_rules_select_and_loads_them():
    run_promtool("check", "config", CONFIG)
    jobs = [job["job_name"] for job in yaml.safe_load(CONFIG.read_text())["scrape_configs"]]
    assert jobs == ["digits"] and any('job="digits"' in expr for expr in rule_exprs())


def test_every_dashboard_query_is_promql_that_prometheus_parses(tmp_path):
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{index}", "expr": expr} for index, expr in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in run_promtool("check", "rules", path).stdout


def test_every_dashboard_panel_queries_the_chosen_prometheus_about_the_service():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    [variable] = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert metric_names(target["expr"]), f"{panel['title']}: {target['expr']}"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])

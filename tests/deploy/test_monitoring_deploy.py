"""The monitoring alert rules and Grafana dashboard in deploy/: the rules pass ``promtool check
rules`` and fire in ``promtool test rules`` on made-up series (drift past 0.2, a failing sink),
and not before; every dashboard query is valid PromQL (checked as a recording rule)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tsf-monitoring-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tsf-dashboard.json"

RULE_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'tsf_drift_psi{model_name="loans", model_version="1.0", feature="age"}'
        values: '0.05x20 0.6x30'
      - series: 'tsf_drift_psi{model_name="loans", model_version="1.0", feature="prediction"}'
        values: '0.01x50'
      - series: 'tsf_capture_sink_errors_total{sink="s3"}'
        values: '0+0x10 1+1x30'
    alert_rule_test:
      - eval_time: 18m
        alertname: TsfFeatureDrift
        exp_alerts: []
      - eval_time: 40m
        alertname: TsfFeatureDrift
        exp_alerts:
          - exp_labels: {severity: warning, model_name: loans, model_version: "1.0",
                         feature: age}
            exp_annotations:
              summary: "Input drift on loans 1.0: age"
              description: >-
                PSI of age is 0.60 (current window against the baseline) for 15 minutes.
      - eval_time: 40m
        alertname: TsfPredictionDrift
        exp_alerts: []
      - eval_time: 30m
        alertname: TsfCaptureSinkFailing
        exp_alerts:
          - exp_labels: {severity: warning, sink: s3}
            exp_annotations:
              summary: "Capture sink s3 keeps failing"
              description: >-
                Writes are retried with backoff; records queue until capture_buffer_records.
"""


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian's prometheus package, make setup)")
    return path


def test_the_prometheus_rule_is_well_formed():
    doc = yaml.safe_load(RULES.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    alerts = {r["alert"] for g in doc["spec"]["groups"] for r in g["rules"]}
    assert {"TsfFeatureDrift", "TsfPredictionDrift", "TsfAccuracyLow", "TsfEqualizedOddsGap",
            "TsfCaptureDropping", "TsfCaptureSinkFailing"} <= alerts


def test_promtool_checks_and_tests_the_rules(promtool, tmp_path):
    groups = yaml.safe_load(RULES.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "tests.yaml").write_text(textwrap.dedent(RULE_TESTS))
    tested = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$model", ".*")}
        for i, e in enumerate(exprs)]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool, "check", "rules", "queries.yaml"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

"""The /metrics exposition checked by promtool, and scraped by a real Prometheus.

Both need the Debian package ``prometheus`` (``make setup`` installs it where apt-get can run).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from urllib.parse import urlparse

import pytest
import requests

from tsf.testing import free_port, stop_process

# TorchServe's historical names: kept for its dashboards, though they break the unit convention
TORCHSERVE_NAMES = ("ts_inference_latency_microseconds", "ts_queue_latency_microseconds")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package prometheus; make setup installs it)")
    return path


def test_promtool_accepts_every_metric(served):
    promtool = need("promtool")
    served.post("/predictions/mlp", json=[1, 2, 3, 4])
    served.post("/explanations/mlp", json=[1, 2, 3, 4])
    served.post("/predictions/echo", json=[1])  # a handler's custom metrics
    text = served.scrape()
    for name in ("tsf_requests_total", "tsf_request_duration_seconds_bucket",
                 "tsf_queue_duration_seconds_bucket", "tsf_stage_duration_seconds_bucket",
                 "tsf_batch_size_bucket", "tsf_queue_depth", "tsf_workers_alive",
                 "tsf_worker_restarts", "tsf_model_load_seconds", "tsf_worker_cpu_seconds_total",
                 "tsf_worker_memory_bytes", "ts_inference_requests_total"):
        assert f"\n{name}{{" in text, name
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                             capture_output=True, timeout=60)
    problems = [line for line in (checked.stdout + checked.stderr).decode().splitlines()
                if line.strip()]
    assert checked.returncode in (0, 3), problems  # 3: lint findings only, no format error
    assert all(line.startswith(TORCHSERVE_NAMES) for line in problems), problems


def test_prometheus_scrapes_tsf_and_answers_a_query(served, tmp_path):
    prometheus = need("prometheus")
    served.post("/predictions/mlp", json=[1, 2, 3, 4])
    target = urlparse(served.metrics).netloc
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: tsf\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    port = free_port()
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    try:
        query = 'sum(tsf_requests_total{model_name="mlp",kind="predict",code="200"})'
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                                      params={"query": query}, timeout=5).json()
                if answer["data"]["result"]:
                    break
            except (requests.ConnectionError, KeyError, ValueError):
                pass
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus never returned the series"
            time.sleep(0.5)
        assert float(answer["data"]["result"][0]["value"][1]) >= 1
        up = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                          params={"query": 'up{job="tsf"}'}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        stop_process(proc, 15)

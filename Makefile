# Keygate. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install stamps: `make run` needs only Keygate and its runtime dependencies; the test and
# lint tools come with `make test` / `make lint`. Either installs afresh when pyproject.toml changes.
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(HASH)
# The address `make run` serves on and prints: GATEWAY_LISTEN when set, as `gateway serve` reads it.
LISTEN ?= $(or $(GATEWAY_LISTEN),127.0.0.1:8080)
DEMO_LISTEN ?= 127.0.0.1:8081

.DEFAULT_GOAL := help
FAST_TREE := build/fast-tree
.PHONY: help run test lint format bench bench-slow bench-sweep bench-servers bench-cache \
	bench-instructions clean \
	demo-upstream build-fast fast-tree test-fast

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "could not create a virtual environment: install python3-venv (apt-get install -y python3-venv)"; exit 1; }
	@echo "installing Keygate and its runtime dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e .; } \
	  > $(VENV)/install.log 2>&1 || { tail -n 30 $(VENV)/install.log; echo "install failed; see $(VENV)/install.log"; exit 1; }
	@rm -f $(VENV)/.installed-run-*; touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	@echo "installing the test and lint tools into $(VENV) (log: $(VENV)/install-dev.log)"
	@$(BIN)/python -m pip install -e '.[dev]' > $(VENV)/install-dev.log 2>&1 || { \
	  tail -n 30 $(VENV)/install-dev.log; echo "install failed; see $(VENV)/install-dev.log"; exit 1; }
	@rm -f $(VENV)/.installed-dev-*; touch $(DEV_STAMP)

run: $(RUN_STAMP) ## serve on 127.0.0.1:8080 or GATEWAY_LISTEN (SQLite, in-process cache, example policy, demo upstream)
	@mkdir -p var
	@$(BIN)/python -m gateway.demo --listen $(DEMO_LISTEN) & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	echo "demo upstream on http://$(DEMO_LISTEN) (answers with what it receives)"; \
	echo ""; \
	echo "First steps (in another terminal, in this folder):"; \
	echo "  export GATEWAY_MODE=development"; \
	echo "  $(BIN)/gateway users create admin@example.com --admin"; \
	echo "  KEY=\$$($(BIN)/gateway keys create --user admin@example.com --label first --permission demo.reports.read)"; \
	echo "  curl -H \"X-API-KEY: \$$KEY\" http://$(LISTEN)/api/reports/daily"; \
	echo ""; \
	GATEWAY_MODE=$${GATEWAY_MODE:-development} GATEWAY_LISTEN=$(LISTEN) $(BIN)/gateway serve

# The browser tests drive Debian's Chromium. Installed here when missing and we are root on a
# Debian-like machine; otherwise the browser tests fail with the reason (they never skip).
/usr/bin/chromium:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser tests (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true; \
	fi

# The nginx tests (tests/integration/test_deploy_nginx.py: `nginx -t` on deploy/'s configs and
# WebSockets through them) need Debian's nginx. Installed as chromium is; its service is not
# started (the tests run their own nginx on loopback ports).
/usr/sbin/nginx:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing nginx for the deploy tests (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null || true; \
	fi

test: $(DEV_STAMP) /usr/bin/chromium /usr/sbin/nginx ## run the whole test suite (real PostgreSQL and Redis; see README)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

build-fast: $(DEV_STAMP) ## a wheel in dist/ with the data plane compiled by mypyc (pure without a C compiler)
	@$(BIN)/python -m pip install -q wheel
	KEYGATE_COMPILE=1 $(BIN)/python -m pip wheel --no-build-isolation --no-deps -w dist .

fast-tree: $(DEV_STAMP) ## a copy of the tree in build/fast-tree with the data plane compiled in place
	rm -rf $(FAST_TREE) && mkdir -p $(FAST_TREE)
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(FAST_TREE)
	cd $(FAST_TREE) && KEYGATE_COMPILE=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	cd $(FAST_TREE) && $(CURDIR)/$(BIN)/python -c \
	  "import gateway.proxy.front as m; assert m.__file__.endswith('.so'), 'not compiled: ' + m.__file__"

test-fast: fast-tree /usr/bin/chromium /usr/sbin/nginx ## the whole test suite against the compiled data plane (build/fast-tree)
	cd $(FAST_TREE) && $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## ruff (lint + format check) and mypy --strict on gateway/
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy gateway

format: $(DEV_STAMP) ## format the code with ruff
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

# The whole comparison in one interleaved run (bench/results/sweep.md): nginx proxy_pass, nginx +
# auth_request, Keygate from the sources and compiled (when a C compiler is here), each also with
# busy_poll_us 200, at 1, 50, 1,000 and 5,000 connections, with CPU per request and memory per
# cached key; then slow clients.
bench: $(DEV_STAMP) ## the whole story: nginx, nginx + auth_request, Keygate pure and compiled, 1..5,000 connections, memory; slow clients
	@if $(MAKE) --no-print-directory fast-tree >$(VENV)/fast-tree.log 2>&1; then \
	  compiled="--compiled $(FAST_TREE)"; \
	else \
	  echo "bench: no compiled build (see $(VENV)/fast-tree.log): Keygate from the sources only"; \
	  compiled=""; \
	fi; \
	$(BIN)/python -m bench.sweep $$compiled --busy-poll 200 $(SWEEP_ARGS)
	$(BIN)/python -m bench.slow $(SLOW_ARGS)

bench-sweep: $(DEV_STAMP) ## the comparison alone (SWEEP_ARGS="--compiled build/fast-tree --connections 50")
	$(BIN)/python -m bench.sweep $(SWEEP_ARGS)

bench-servers: $(DEV_STAMP) ## both of Keygate's servers (fast front, aiohttp) with 1 and 2 workers, unpinned
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-cache: $(DEV_STAMP) ## RSS per cached key in the verified-key cache at 100,000 keys
	$(BIN)/python -m bench.cache_memory $(CACHE_ARGS)

bench-instructions: $(DEV_STAMP) ## instructions per proxied request under callgrind (INSTR_ARGS="--tree build/fast-tree")
	$(BIN)/python -m bench.instructions $(INSTR_ARGS)

bench-slow: $(DEV_STAMP) ## one worker under idle and trickling clients (writes bench/results/slow.md)
	$(BIN)/python -m bench.slow $(SLOW_ARGS)

clean: ## remove the virtual environment, caches and local data
	rm -rf $(VENV) build dist var .pytest_cache .mypy_cache .ruff_cache .hypothesis test-output

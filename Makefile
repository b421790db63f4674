# Everything bootstraps its own virtual environment from python3; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-processes test-others test-integration chaos fuzz bench bench-fairness soak soak-scale-out lint format typecheck coverage clean screenshots

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/ipaas serve

# Two pytest runs side by side, a core each: the tests that start real processes (marker
# `process`: they time things, a cancel within 100 ms, a drain within its grace, and share one
# Redis database, so they run one at a time) and all the others. Each run's output is printed
# whole when it ends (--output-sync); make fails if either fails.
test: install
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-processes test-others

test-processes: install
	$(BIN)/pytest -q -m "process and not chaos" -o cache_dir=.pytest_cache/processes

test-others: install
	$(BIN)/pytest -q -m "not process and not chaos"

# The service-backed suites: PostgreSQL and Redis must be reachable (no skipping).
# The long crash and outage runs (3,000 webhooks with SIGKILLed workers; Redis and PostgreSQL
# cut for 10 s): scale-out processes on PostgreSQL and Redis, so both must be reachable.
chaos: install
	@test -n "$$IPAAS_TEST_POSTGRES_URL" || (echo "set IPAAS_TEST_POSTGRES_URL (see README)"; exit 2)
	@test -n "$$IPAAS_TEST_REDIS_URL" || (echo "set IPAAS_TEST_REDIS_URL (see README)"; exit 2)
	IPAAS_REQUIRE_SERVICES=1 $(BIN)/pytest -q -m chaos

test-integration: install
	@test -n "$$IPAAS_TEST_POSTGRES_URL" || (echo "set IPAAS_TEST_POSTGRES_URL (see README)"; exit 2)
	@test -n "$$IPAAS_TEST_REDIS_URL" || (echo "set IPAAS_TEST_REDIS_URL (see README)"; exit 2)
	IPAAS_REQUIRE_SERVICES=1 $(BIN)/pytest -q -m "postgres or redis"

# schemathesis over the whole API, long and with a random seed (make test runs a short,
# deterministic pass of the same test). IPAAS_FUZZ_EXAMPLES: examples per operation.
# Then the same on PostgreSQL when IPAAS_TEST_POSTGRES_URL is set (a database of its own).
fuzz: install
	IPAAS_FUZZ_EXAMPLES=$${IPAAS_FUZZ_EXAMPLES:-300} $(BIN)/pytest -q tests/api/test_fuzz.py
	@if [ -n "$$IPAAS_TEST_POSTGRES_URL" ]; then \
		IPAAS_FUZZ_POSTGRES=1 IPAAS_FUZZ_EXAMPLES=$${IPAAS_FUZZ_EXAMPLES:-300} \
			$(BIN)/pytest -q tests/api/test_fuzz.py; \
	else echo "make fuzz: IPAAS_TEST_POSTGRES_URL is not set, PostgreSQL pass skipped"; fi

bench: install
	$(BIN)/python -m bench --tracing
	$(BIN)/python -m bench.console

# Issue 4, item 3: tenant A floods 5,000 webhooks at a slow endpoint, tenant B sends 50.
bench-fairness: install
	$(BIN)/python -m bench.fairness

# The embedded server at 500 webhooks/s for 10 minutes: RSS, WAL, nothing lost (~11 min).
soak: install
	$(BIN)/python -m bench.soak

# The same on 1 API + 2 worker processes, PostgreSQL and Redis (a database made and dropped).
soak-scale-out: install
	@test -n "$$IPAAS_TEST_POSTGRES_URL" || (echo "set IPAAS_TEST_POSTGRES_URL (see README)"; exit 2)
	@test -n "$$IPAAS_TEST_REDIS_URL" || (echo "set IPAAS_TEST_REDIS_URL (see README)"; exit 2)
	$(BIN)/python -m bench.soak --scale-out 2

# Every console page at 375 and 1280 px (needs /usr/bin/chromium: apt-get install chromium).
screenshots: install
	$(BIN)/python -m tests.web.screenshots docs/screenshots

lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

coverage: install
	$(BIN)/pytest -q --cov=ipaas --cov-report=term --cov-report=html

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache htmlcov

# The product's front door.  `make demo` and `make test` each install everything they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-unit test-fast lint bench image-smoke

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(VENV)/.installed

## Set up, then curate the bundled sample on the embedded default (local Ray, CPU, bundled models).
demo: install
	$(VENV)/bin/curate run --output output/demo

## Set up, then run lint and the whole test suite (unit + real-engine integration tests).
## Three workers, each module on one (its module fixtures stay shared): the suite mixes engine start-ups,
## which keep a core busy, with waits (a stall timeout, a cron minute, a shard's time limit) that leave
## one idle; a third worker fills those on two cores (docs/testing.md has the figures).  Modules go out
## longest first (tests/scheduling.py), not xdist's most-tests-first, so the workers end together.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

## Three where at least 20 GiB are free (three workers' engines held up to 18.3 GiB at once), else two.
TEST_WORKERS ?= $(shell awk '/^MemAvailable/ {print ($$2 >= 20 * 1024 * 1024) ? 3 : 2}' /proc/meminfo 2>/dev/null || echo 2)

## Pure logic only: no process, no server, no engine (a test that starts one fails); under a minute.
test-unit: install
	CURATE_TEST_TIER=unit $(PY) -m pytest -m "not slow and not process"

## The unit tier plus the tests that start the CLI or a tool, but no engine: about a minute.
test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) -m bench.run

## Opt-in (minutes, ~26 GB of disk): build docker/cpu.Dockerfile and curate the sample inside it.
image-smoke:
	bash scripts/image_smoke.sh

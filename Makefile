# eve-agent build, lint and test entry points (GNU make). See docs/development.md.
#
#   make deps            Debian packages + .venv (idempotent, quick when nothing changed)
#   make lint            ruff check, ruff format --check, mypy --strict, generated code up to date
#   make test            deps + services + the whole pytest suite (TESTS=, PYTEST_ARGS=, JUNIT=)
#   make test-unit | test-integration | test-e2e | test-faults    one tier
#   make demo | bench    tools/demo.py | tools/bench.py (ARGS= passes arguments)
#   make fuzz            tools/fuzz.py: 10^6 inputs over the parsers (ARGS=; not in make test)
#   make proto           regenerate agent/wire/pb from proto/
#   make images          build the test images (images/*/build.sh; cached by input hash)
#   make images-k3s      the K3s VM image (K3S_BIN=/path/to/k3s required; images/k3s/)
#   make deb             Debian packages eve-agent and eve-controller in build/ (packaging/)
#   make image           the bootable node disk image (images/node/; cached by input hash)
#   make services | services-stop | services-status  dockerd, libvirtd, virtlogd, registry
#   make fmt             ruff format + ruff check --fix
#   make clean           remove .venv and caches (services keep running)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV ?= .venv
PY := $(VENV)/bin/python
# What `make test` runs, and extra pytest arguments (e.g. PYTEST_ARGS='-k nft -x').
TESTS ?= tests
PYTEST_ARGS ?=
# Write a JUnit XML report there when set (e.g. JUNIT=build/junit.xml).
JUNIT ?=
# Hard limit for one pytest run, in seconds; each test also has pytest-timeout's 300 s (the
# node-image tests set their own: they boot UEFI machines under TCG, several times each).
TEST_TIMEOUT ?= 3300
# Arguments for demo and bench.
ARGS ?=

PYTEST := timeout --signal=INT --kill-after=30 $(TEST_TIMEOUT) $(PY) -m pytest -q -ra \
	--durations=15 --durations-min=0.5 $(if $(JUNIT),--junitxml=$(JUNIT))

# Start the services when root; otherwise say why tests needing them will skip.
define start_services
	if [ "$$(id -u)" -eq 0 ]; then \
		bash tools/services.sh start; \
	else \
		echo "not root: not starting services; tests that need them will skip"; \
	fi
endef

.PHONY: help deps deps-apt deps-venv lint fmt test test-unit test-integration test-e2e test-faults \
	demo bench fuzz proto images images-k3s deb image services services-stop services-status clean

help:
	@sed -n '3,17s/^# \{0,1\}//p' Makefile

deps:
	bash tools/deps.sh

deps-apt:
	bash tools/deps.sh apt

deps-venv:
	bash tools/deps.sh venv

lint: deps
	@rc=0; \
	echo "== ruff check"; $(VENV)/bin/ruff check . || rc=1; \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check . || rc=1; \
	echo "== mypy --strict"; $(VENV)/bin/mypy --strict || rc=1; \
	if [ -f tools/gen_proto.py ]; then \
		echo "== gen_proto --check"; $(PY) tools/gen_proto.py --check || rc=1; \
	fi; \
	echo "== lintian (make deb)"; \
	if debs=$$(bash packaging/build-deb.sh | awk '{print $$2}'); then \
		lintian --fail-on error,warning $$debs || rc=1; \
	else rc=1; fi; \
	if [ $$rc -ne 0 ]; then echo "lint: FAILED"; else echo "lint: ok"; fi; \
	exit $$rc

fmt: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Tests that need a service fail (instead of skipping) when it is missing.
test: deps
	@$(start_services)
	EVE_AGENT_REQUIRE_SERVICES=1 $(PYTEST) $(PYTEST_ARGS) $(TESTS)

test-unit: deps
	$(PYTEST) $(PYTEST_ARGS) tests/unit

test-integration: deps
	@$(start_services)
	EVE_AGENT_REQUIRE_SERVICES=1 $(PYTEST) $(PYTEST_ARGS) tests/integration

test-e2e: deps
	@$(start_services)
	EVE_AGENT_REQUIRE_SERVICES=1 $(PYTEST) $(PYTEST_ARGS) tests/e2e

# kill -9, a full disk, corrupt files, controller restarts (tests/faults; EVE_FAULTS_SEED replays).
test-faults: deps
	@$(start_services)
	EVE_AGENT_REQUIRE_SERVICES=1 $(PYTEST) $(PYTEST_ARGS) tests/faults

demo: deps
	@$(start_services)
	$(PY) tools/demo.py $(ARGS)

bench: deps
	@$(start_services)
	$(PY) tools/bench.py $(ARGS)

# The long parser fuzzing run (tests/unit/test_fuzz_parsers.py is the CI part); no services.
fuzz: deps
	$(PY) tools/fuzz.py $(ARGS)

proto: deps
	$(PY) tools/gen_proto.py

images: deps
	@$(start_services)
	bash images/build.sh $(ARGS)

# K3S_BIN=/path/to/k3s [K3S_AIRGAP_IMAGES=/path/to/k3s-airgap-images-amd64.tar.zst]
images-k3s: deps
	bash images/build.sh k3s

deb: deps
	bash packaging/build-deb.sh

image: deps
	bash images/build.sh node

services:
	bash tools/services.sh start

services-stop:
	bash tools/services.sh stop

services-status:
	bash tools/services.sh status

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

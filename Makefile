# SPDX-License-Identifier: LGPL-2.1-or-later
# kho-inspect: `make test` runs everything (lint, unit, synthetic kernels, the
# kernel lab); `make demo` runs the handover scenario on the lab kernel.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: all venv host-deps test unit lint bench demo clean

all: test

host-deps:
	bash scripts/install-host-deps.sh

$(STAMP): setup.py setup.cfg pyproject.toml scripts/install-host-deps.sh kho_inspect/_radixscan.c
	bash scripts/install-host-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check kho_inspect tests bench scripts

# The whole suite: unit, synthetic-kernel and lab tests (the lab builds what is missing),
# on two pytest-xdist workers: each lab run stays on one (tests/lab/conftest.py), and a
# TCG guest keeps about one core busy, so two lab kernels run side by side. (pytest < 9:
# pytest-xdist 3.8 groups tests by rewriting Item._nodeid, which pytest 9.2 no longer
# reads (pytest-xdist issue #1386): the groups are ignored and a lab run would start on
# both workers; tests/lab/conftest.py refuses that.)
TEST_WORKERS ?= 2
test: $(STAMP) lab-deps lint
	$(VENV)/bin/pytest -ra -n $(TEST_WORKERS) --dist loadgroup --durations=15 \
	    --doctest-modules kho_inspect tests

# Everything but the kernel lab (quick).
unit: $(STAMP) lint
	$(VENV)/bin/pytest -ra -m "not lab" --doctest-modules kho_inspect tests

bench: $(STAMP)
	$(PY) bench/bench_radix.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

include vm/Makefile.lab

# One-stop set-up: `make run` trains the demo, `make test` runs the suite.
# Both create .venv on first use. torch is pinned to the CPU wheel only when no torch is
# importable; a machine that already has one (a GPU node) keeps it via system site-packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint clean slurm-deps postgres-deps test-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "keeping the existing torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP) data/toy/.complete
	$(VENV)/bin/trainyard run examples/particlenet-lite-toy.yaml

data/toy/.complete: | $(STAMP)
	$(VENV)/bin/trainyard data generate toy --out data/toy
	touch $@

test: $(STAMP) test-deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# Debian packages the tests use, each installed only where it is missing, with one
# `apt-get update` for all: SLURM's daemons (the SLURM tests bring up a real cluster,
# deploy/slurm/cluster-up.sh) and PostgreSQL (tests/postgres.py starts a throwaway server from
# /usr/lib/postgresql/*/bin).
MISSING_SLURM = $$(command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 \
	|| echo slurm-wlm munge)
MISSING_POSTGRES = $$(ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql)
define install_missing
	@export PATH="$$PATH:/usr/sbin:/sbin"; packages="$(1)"; packages=$$(echo $$packages); \
	if [ -n "$$packages" ]; then \
		echo "installing $$packages for the tests"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq >/dev/null && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$packages >/dev/null; \
	fi
endef

test-deps:
	$(call install_missing,$(MISSING_SLURM) $(MISSING_POSTGRES))

slurm-deps:
	$(call install_missing,$(MISSING_SLURM))

postgres-deps:
	$(call install_missing,$(MISSING_POSTGRES))

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .trainyard .pytest_cache

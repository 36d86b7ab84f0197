# One-stop set-up: `make run` trains the demo, `make test` runs the suite.
# Both create .venv on first use. torch is pinned to the CPU wheel only when no torch is
# importable; a machine that already has one (a GPU node) keeps it via system site-packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint clean slurm-deps

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

test: $(STAMP) slurm-deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# The SLURM tests bring up a real cluster on this machine from Debian's packages
# (deploy/slurm/cluster-up.sh); installed once, only where slurmctld or munged is missing.
slurm-deps:
	@export PATH="$$PATH:/usr/sbin:/sbin"; \
	if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then \
		echo "installing slurm-wlm and munge for the SLURM tests"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq >/dev/null && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .trainyard .pytest_cache

# One-stop set-up: `make run` trains the demo, `make test` runs the suite.
# Both create .venv on first use. A torch that is already importable and at least TORCH_MIN
# (a GPU node's own build) is kept through the system site-packages; otherwise TORCH is
# installed into .venv (the CPU wheel where pip finds it locally, as on the project's machines).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# Keep equal to the torch lower bound in pyproject.toml (tests/test_dependency_bounds.py checks).
TORCH_MIN := 2.6
HAS_TORCH = -c "import sys, torch; sys.exit(torch.__version__ < '$(TORCH_MIN)')"

.PHONY: setup run test test-k8s lint clean slurm-deps postgres-deps test-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) $(HAS_TORCH) 2>/dev/null; then \
		echo "keeping the existing torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) $(HAS_TORCH) 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	@$(PY) -c "import torch; print('using torch', torch.__version__, 'from', torch.__file__)"
	touch $(STAMP)

run: $(STAMP) data/toy/.complete
	$(VENV)/bin/trainyard run examples/particlenet-lite-toy.yaml

data/toy/.complete: | $(STAMP)
	$(VENV)/bin/trainyard data generate toy --out data/toy
	touch $@

test: $(STAMP) test-deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	CI=$${CI:-true} $(PY) -m pytest -q -n 2 --dist loadfile

# Debian packages the tests use, each installed only where it is missing, with one
# `apt-get update` for all: SLURM's daemons (the SLURM tests bring up a real cluster,
# deploy/slurm/cluster-up.sh) and PostgreSQL (tests/postgres.py starts a throwaway server from
# /usr/lib/postgresql/*/bin) and Chromium (the dashboard's browser tests drive it through
# Playwright's executable_path; `playwright install` would download a browser).
MISSING_SLURM = $$(command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 \
	|| echo slurm-wlm munge)
MISSING_POSTGRES = $$(ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql)
MISSING_CHROMIUM = $$(command -v chromium >/dev/null 2>&1 || echo chromium)
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
	$(call install_missing,$(MISSING_SLURM) $(MISSING_POSTGRES) $(MISSING_CHROMIUM))

slurm-deps:
	$(call install_missing,$(MISSING_SLURM))

postgres-deps:
	$(call install_missing,$(MISSING_POSTGRES))

# A trial on whatever cluster the current kubeconfig reaches (a kind cluster on a laptop, ...);
# not part of `make test`: nothing here has a cluster. K8S_IMAGE, K8S_HOME, K8S_CLAIM and
# K8S_MASTER_HOST are required: see deploy/kubernetes/test-k8s.sh and
# docs/operators/kubernetes.md, "Proving a cluster works".
test-k8s: $(STAMP)
	TRAINYARD=$(VENV)/bin/trainyard deploy/kubernetes/test-k8s.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .trainyard .pytest_cache

# Setup on a fresh Debian machine: `make bench` or `make test` does it all (as root, the Debian
# packages too; otherwise it names the missing ones, and the tests that need them skip).
VENV ?= .venv
PREFECT_VENV ?= .venv-prefect
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned to a CPU build; elsewhere set TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PYTEST_ARGS ?=
# PostgreSQL for the Airflow tests; Podman, runc, debootstrap and Compose for the container architectures;
# the OpenSSH server for the remote xdist worker test; Chromium for the HTML report's browser test
SYSTEM_PACKAGES := postgresql podman runc debootstrap docker-compose openssh-server chromium

# make reference: the committed reference run (results/README.md#reference) of every local architecture
REFERENCE_ARCHS ?= inprocess,subprocess,metaflow-local,airflow-local,kubeflow-local,dvc,mlflow
REFERENCE_MACHINE ?= $(shell printf '%s-%scpu-%sGiB' "$$(sed -n 's/^model name[^:]*: *//p' /proc/cpuinfo | head -1)" \
	"$$(nproc)" "$$(awk '/^MemTotal/ {printf "%.0f", $$2 / 1048576}' /proc/meminfo)" | tr -cs 'A-Za-z0-9.' '-')
REFERENCE := results/reference/$(REFERENCE_MACHINE)

.PHONY: system install bench test reference clean

system:
	@command -v dpkg-query >/dev/null || { echo "make system: not Debian; install these yourself: $(SYSTEM_PACKAGES)" >&2; exit 0; }; \
	missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "make system: missing Debian packages:" $$missing "(run 'sudo make system'); the tests that need them skip" >&2; exit 0; fi; \
	echo "make system: installing" $$missing; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

install: system $(VENV)/.installed $(PREFECT_VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -c requirements/constraints.txt torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e '.[frameworks,otel,test]'
	# The editable install has no bytecode, and with PYTHONDONTWRITEBYTECODE every task's process would compile the package anew
	$(PY) -m compileall -q pytest_mlpbench workloads
	touch $@

# Prefect 3 needs fastapi>=0.139, Airflow 3.3 fastapi<0.137: Prefect's server, worker and flow runs get an
# environment of their own (docs/prefect.md)
$(PREFECT_VENV)/.installed: requirements/prefect-constraints.txt
	test -x $(PREFECT_VENV)/bin/python || python3 -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install -q -c requirements/prefect-constraints.txt prefect
	$(PREFECT_VENV)/bin/python -m pip check
	touch $@

bench: install
	$(VENV)/bin/pytest benchmarks -m training $(PYTEST_ARGS)

test: install
	$(VENV)/bin/pytest tests --durations=15 $(PYTEST_ARGS)

reference: install
	rm -rf $(REFERENCE) && mkdir -p $(REFERENCE)
	start=$$(date +%s); \
	$(VENV)/bin/pytest benchmarks -m "training or inference" --mlpbench-arch=$(REFERENCE_ARCHS) \
		--mlpbench-scale=small --mlpbench-rounds=5 --mlpbench-results=$(REFERENCE) \
		--benchmark-json=$(REFERENCE)/benchmark.json $(PYTEST_ARGS); status=$$?; \
	{ echo "# $(REFERENCE_MACHINE)"; echo; echo "\`make reference\`, $$(date -u +%F): $$(( $$(date +%s) - start )) s"; \
		echo; echo '```'; lscpu; echo; free -h; echo; uname -srm; $(PY) --version; echo '```'; } > $(REFERENCE)/machine.md; \
	exit $$status

clean:  # your own results; results/README.md and results/reference/ are the repository's
	rm -rf $(VENV) $(PREFECT_VENV) .benchmarks
	find results -mindepth 1 -maxdepth 1 ! -name README.md ! -name reference -exec rm -rf {} +

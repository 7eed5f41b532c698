# Setup on a fresh Debian machine: `make system` (as root) then `make install`.
# `make bench` and `make test` install first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned to a CPU build; elsewhere set TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: system install bench test clean

system:  # PostgreSQL for the Airflow tests; Podman, runc, debootstrap and Compose for the container architectures; the OpenSSH server for the remote xdist worker test
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql podman runc debootstrap docker-compose openssh-server >/dev/null

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -c requirements/constraints.txt torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e '.[frameworks,otel,test]'
	# The editable install has no bytecode, and with PYTHONDONTWRITEBYTECODE every task's process would compile the package anew
	$(PY) -m compileall -q pytest_mlpbench workloads
	touch $@

bench: install
	$(VENV)/bin/pytest benchmarks -m training $(PYTEST_ARGS)

test: install
	$(VENV)/bin/pytest tests --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results .benchmarks

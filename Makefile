# nsnet: every target installs what it needs first (idempotent), on a fresh Debian as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 nftables libnftables1 runc busybox-static iputils-ping dnsutils \
	dnsperf etcd-server etcd-client util-linux python3-venv procps iptables iperf3 \
	docker-compose
DATA_ROOT ?= /var/lib/nsnet
EXEC_ROOT ?= /run/nsnet
PYTEST_ARGS ?=

.PHONY: install system-deps venv run test unit integration lint bench docs clean

install: system-deps venv

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

run: install
	$(VENV)/bin/nsnetd --data-root $(DATA_ROOT) --exec-root $(EXEC_ROOT)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: install
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

test: install lint
	$(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

# docs/cli.md is generated from the CLI's own help; tests/unit/test_cli_docs.py checks it.
docs: install
	$(PY) -m nsnet.cli.docgen > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# fastzk: `make serve` runs a single-node server on 127.0.0.1:2181 with the embedded config;
# `make test` sets up everything (venv, build, the Apache ZooKeeper reference server) and runs
# the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test install reference-server bench lint clean

$(STAMP): pyproject.toml setup.py fastzk/_core.pyx fastzk/_core.pxd $(wildcard fastzk/core/*.pxi)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/fastzk serve

# Apache ZooKeeper 3.8 from Debian (and a JDK) for the differential tests; started by the
# tests themselves on loopback ports, never through systemd.
reference-server:
	@if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null; then \
		echo "installing the Debian packages zookeeper and a JDK"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends zookeeper default-jre-headless >/dev/null; \
	fi

test: install reference-server
	$(VENV)/bin/ruff check fastzk tests bench
	$(PY) -m pytest -q tests

bench: install reference-server
	$(PY) -m pytest bench/test_core_micro.py --benchmark-only

lint: install
	$(VENV)/bin/ruff check fastzk tests bench

clean:
	rm -rf build $(VENV) fastzk/_core.c fastzk/_core*.so fastzk-data

# fastzk: `make serve` runs a single-node server on 127.0.0.1:2181 with the embedded config;
# `make test` sets up everything (venv, build, the Apache ZooKeeper reference server) and runs
# the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KRB5_STAMP := $(VENV)/.kerberos

.PHONY: serve test install reference-server kerberos bench bench-baseline lint clean ensemble ensemble-stop

$(STAMP): pyproject.toml setup.py fastzk/_core.pyx fastzk/_core.pxd $(wildcard fastzk/core/*.pxi)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# MIT Kerberos for the GSSAPI tests (only `make test` needs it): libkrb5-dev to build the
# gssapi and kerberos wheels, krb5-kdc, krb5-admin-server and krb5-user for the throwaway KDC
# the tests start themselves (k5test). The Debian packages are installed only when missing,
# with a policy-rc.d that keeps their init scripts from starting a KDC (a machine's own
# policy-rc.d is left alone).
$(KRB5_STAMP): $(STAMP)
	@if ! test -x /usr/sbin/krb5kdc || ! test -x /usr/sbin/kadmin.local \
		|| ! test -x /usr/bin/kinit || ! test -x /usr/bin/krb5-config; then \
		echo "installing the Debian packages krb5-kdc krb5-admin-server krb5-user libkrb5-dev"; \
		policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
			printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends krb5-kdc krb5-admin-server krb5-user libkrb5-dev \
			>/dev/null; status=$$?; \
		if [ -n "$$policy" ]; then rm -f $$policy; fi; \
		exit $$status; \
	fi
	$(PY) -m pip install -q -e '.[test-kerberos]'
	touch $(KRB5_STAMP)

kerberos: $(KRB5_STAMP)

serve: install
	$(VENV)/bin/fastzk serve

# A 3-server ensemble on this machine (examples/ensemble/zoo{1,2,3}.cfg: client ports
# 2181-2183), in the background; data and logs in ./fastzk-ensemble/N. `make ensemble-stop`.
ensemble: install
	@for i in 1 2 3; do \
		mkdir -p fastzk-ensemble/$$i && echo $$i > fastzk-ensemble/$$i/myid; \
		if [ -f fastzk-ensemble/$$i/pid ] && kill -0 $$(cat fastzk-ensemble/$$i/pid) 2>/dev/null; then \
			echo "server.$$i already running (pid $$(cat fastzk-ensemble/$$i/pid))"; continue; fi; \
		$(VENV)/bin/fastzk serve examples/ensemble/zoo$$i.cfg >> fastzk-ensemble/$$i/server.log 2>&1 & \
		echo $$! > fastzk-ensemble/$$i/pid; \
		echo "server.$$i: pid $$!, client port 218$$i, log fastzk-ensemble/$$i/server.log"; \
	done
	@echo "connect string: 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183"

ensemble-stop:
	@for i in 1 2 3; do \
		if [ -f fastzk-ensemble/$$i/pid ]; then kill $$(cat fastzk-ensemble/$$i/pid) 2>/dev/null || true; \
			rm -f fastzk-ensemble/$$i/pid; echo "server.$$i stopped"; fi; \
	done

# Apache ZooKeeper 3.8 from Debian (and a JDK) for the differential tests; started by the
# tests themselves on loopback ports, never through systemd.
reference-server:
	@if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null; then \
		echo "installing the Debian packages zookeeper and a JDK"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends zookeeper default-jre-headless >/dev/null; \
	fi

test: install reference-server kerberos
	$(VENV)/bin/ruff check fastzk tests bench
	$(PY) -m pytest -q tests

# Micro benchmarks of the Cython core against the committed baseline (bench/baseline/): a
# median more than 20 % slower than the baseline's fails the run and is listed.
# `make bench-baseline` records a new baseline (commit it with the change that earns it).
BENCH_MICRO := bench/test_core_micro.py bench/test_sessions_micro.py
BENCH_STORAGE := --benchmark-storage=file://bench/baseline

bench: install reference-server
	$(PY) -m pytest $(BENCH_MICRO) --benchmark-only $(BENCH_STORAGE) \
		--benchmark-compare=0001 --benchmark-compare-fail=median:20% \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name

bench-baseline: install
	rm -rf bench/baseline
	$(PY) -m pytest $(BENCH_MICRO) --benchmark-only $(BENCH_STORAGE) --benchmark-save=baseline

lint: install
	$(VENV)/bin/ruff check fastzk tests bench

clean:
	rm -rf build $(VENV) fastzk/_core.c fastzk/_core*.so fastzk-data fastzk-ensemble

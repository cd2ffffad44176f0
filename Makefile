# shop-crm: `make demo` and `make test` build everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SYSTEM_PACKAGES := default-jre-headless postgresql mariadb-server

FERRETDB := .cache/bin/ferretdb
WEED := .cache/bin/weed

.PHONY: demo test system airflow lock clean-data help ferretdb seaweedfs

help:
	@echo "make demo    generate the demo shop (SQLite) if missing, run the nightly DAG for yesterday, print where results are"
	@echo "make test    run the whole test suite"
	@echo "make airflow run Airflow as in production (scheduler, DAG processor, triggerer, API server; PostgreSQL metadata) on this project"

demo: system $(INSTALLED)
	$(BIN)/crm demo

test: system $(INSTALLED) $(FERRETDB) $(WEED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest

airflow: system $(INSTALLED)
	$(BIN)/crm airflow

# Java (for Spark), the PostgreSQL and MariaDB server binaries that the tests start themselves, and
# Chromium, in which tests/test_report.py renders the run report headless.
system:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v mariadbd >/dev/null || test -x /usr/sbin/mariadbd || missing="$$missing mariadb-server"; \
	command -v chromium >/dev/null || test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing; run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# The virtualenv, reinstalled only when setup.py or the lock file change.
$(INSTALLED): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# FerretDB v1.24.2 (the MongoDB wire protocol over SQLite), for the tests of document shops: built with
# `go install` from the Go module proxy into .cache/ (modules in .cache/go, so a rebuild needs no network).
# tools/ferretdb runs FerretDB's embeddable package, pinned by its go.mod and go.sum (the upstream command,
# built from the proxy, panics at start for want of a release-generated version file).
ferretdb: $(FERRETDB)
$(FERRETDB): tools/ferretdb/go.mod tools/ferretdb/go.sum tools/ferretdb/main.go
	@command -v go >/dev/null || { echo "go (1.24 or newer) is needed to build FerretDB for the tests: https://go.dev/dl/"; exit 1; }
	cd tools/ferretdb && GOPATH=$(CURDIR)/.cache/go GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-modcacherw GOTOOLCHAIN=local go install .

# SeaweedFS's `weed` (Apache-2.0), the S3-compatible server that tests/objectstore.py starts for the tests of the
# lake on object storage (docs/scaling-out.md): built with `go install` from the Go module proxy, pinned by
# tools/seaweedfs/go.mod and go.sum (a `tool` line: the upstream command as it is). Its modules are some 740 MB
# of downloads (3.3 GB unpacked), so they go to Go's own module cache (`go env GOMODCACHE`, ~/go/pkg/mod by
# default), shared by every clone and by CI's Go cache, not into the clone like FerretDB's 630 MB; set
# GOMODCACHE to keep them elsewhere.
seaweedfs: $(WEED)
$(WEED): tools/seaweedfs/go.mod tools/seaweedfs/go.sum
	@command -v go >/dev/null || { echo "go (1.26 or newer) is needed to build SeaweedFS for the tests: https://go.dev/dl/"; exit 1; }
	cd tools/seaweedfs && GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-modcacherw GOTOOLCHAIN=local go install tool

# Regenerate constraints.txt from a fresh resolution of setup.py.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q '.[test,bench]'
	{ head -n 2 constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^shop-crm'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

clean-data:
	rm -rf data

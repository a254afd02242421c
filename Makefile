# Quick start (fresh clone, Python 3.11):  make demo   |   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

DEMO_CMD ?= echo "hello from a workerwire worker on $$(hostname)"; uname -sr; echo "a line on stderr" >&2; exit 0

.PHONY: demo demo-contract test typecheck conformance bench bench-quick clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: a master and a worker on loopback over the default backend (pb),
# one command run on the worker, its output streamed live, its exit code returned.
demo: $(STAMP)
	$(VENV)/bin/workerwire exec -- sh -c '$(DEMO_CMD)'

# What crosses the contract, call by call, over the in-process backend.
demo-contract: $(STAMP)
	$(PY) examples/demo.py

# rabbitmq-server (amqp tests) is installed when missing, unless a broker is given.
test: typecheck
	if [ -z "$${WORKERWIRE_AMQP_URL:-}" ]; then bash .ci/system-packages; fi
	$(PY) -m pytest

# mypy checks import names; setup.cfg maps them onto folders, so link them up first.
TYPECHECK := build/typecheck
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	ln -s $(CURDIR)/core $(TYPECHECK)/workerwire
	ln -s $(CURDIR)/plugins/pb $(TYPECHECK)/workerwire_pb
	ln -s $(CURDIR)/plugins/amp $(TYPECHECK)/workerwire_amp
	ln -s $(CURDIR)/plugins/null $(TYPECHECK)/workerwire_null
	ln -s $(CURDIR)/app $(TYPECHECK)/workerwire_app
	ln -s $(CURDIR)/plugins/amqp $(TYPECHECK)/workerwire_amqp
	ln -s $(CURDIR)/integrations/buildbot $(TYPECHECK)/workerwire_buildbot
	ln -s $(CURDIR)/plugins/msgpack $(TYPECHECK)/workerwire_msgpack
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(PY) -m mypy --config-file $(CURDIR)/setup.cfg \
		-p workerwire -p workerwire_pb -p workerwire_amp -p workerwire_null -p workerwire_app \
		-p workerwire_amqp -p workerwire_buildbot -p workerwire_msgpack
	cd $(CURDIR)/examples/jsonlines && MYPYPATH=$(CURDIR)/$(TYPECHECK) $(CURDIR)/$(PY) -m mypy --config-file $(CURDIR)/setup.cfg \
		acme_jsonlines.py acme_jsonlines_raw.py

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

conformance: $(STAMP)
	$(PY) -m workerwire.conformance $(BACKEND)

clean:
	rm -rf $(VENV) build *.egg-info

# The stable interface: setup, demo, test, kafka-start, kafka-stop, kafka-status.
# Each target installs what it needs first, so every one works on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BROKERS ?= 1
DEMO_DURATION_S ?= 30
export BROKERS

.PHONY: setup demo test kafka-fetch kafka-start kafka-stop kafka-status kafka-reset bench bench-quick evaluate clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required; set PYTHON=python3.11 or similar")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

kafka-fetch: setup
	$(PY) -m broker.local_kafka fetch

kafka-start: setup
	$(PY) -m broker.local_kafka start

kafka-stop: setup
	$(PY) -m broker.local_kafka stop

kafka-status: setup
	$(PY) -m broker.local_kafka status

kafka-reset: setup
	$(PY) -m broker.local_kafka reset

demo: setup
	$(PY) -m scripts.demo --duration-s $(DEMO_DURATION_S)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m bench.run --output docs/benchmarks.md

bench-quick: setup
	$(PY) -m bench.run --quick

evaluate: setup
	$(PY) -m bench.evaluate_detection

clean:
	rm -rf $(VENV) .pytest_cache

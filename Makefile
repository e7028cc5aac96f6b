# seqrl: the two commands are `make lab` (read and run the book) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seqrl-installed
TORCH  := torch==2.13.0
JOBS   ?= 2
PORT   ?= 8888
# JupyterLab refuses to run as root unless told; containers and CI machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help venv lab test unit notebooks book exercises bench clean grade

help:
	@echo "make lab        install into .venv (first time) and open JupyterLab on notebooks/ (NO_BROWSER=1 for headless)"
	@echo "make test       install into .venv and run unit tests + nbval over notebooks/ and solutions/"
	@echo "make book       execute every chapter and write the HTML book to build/index.html"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make bench      install the peers (transformers, TRL) and run the benchmarks in bench/ (bench/RESULTS.md)"
	@echo "make grade      grade handed-in notebooks: make grade SUBMISSIONS=dir OUT=gradebook.csv [HIDDEN=dir FEEDBACK=dir] (docs/grading.md)"

# The venv is (re)built when pyproject.toml changes. torch is installed first and pinned, so pip
# takes the CPU wheel instead of pulling several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(ROOT_FLAG) $(if $(NO_BROWSER),--no-browser --ServerApp.ip=127.0.0.1,)

# With several pytest workers, each runs single-threaded torch: two workers x two threads on two
# cores is several times slower than one thread each (oversubscription).
THREADS := $(if $(filter 1,$(JOBS)),,OMP_NUM_THREADS=1 SEQRL_NUM_THREADS=1)

# Pretrained models are built first, JOBS at a time, so that no chapter trains them inside its budget.
test: $(STAMP)
	$(VENV)/bin/seqrl models --jobs $(JOBS)
	$(THREADS) $(PY) -m pytest -n $(JOBS) --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest tests

notebooks: $(STAMP)
	$(VENV)/bin/seqrl models --jobs $(JOBS)
	$(THREADS) $(PY) -m pytest -n $(JOBS) --dist loadfile notebooks solutions

book: $(STAMP)
	$(VENV)/bin/seqrl book --out build

exercises: $(STAMP)
	$(VENV)/bin/seqrl exercises

# The benchmarks compare against transformers and TRL, an optional extra the book never needs.
BENCH_STAMP := $(VENV)/.seqrl-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/run_all.py

# Grade students' exercise notebooks (docs/grading.md). Exit status 0 unless the grader itself failed.
SUBMISSIONS ?= submissions
OUT         ?= gradebook.csv
grade: $(STAMP)
	$(VENV)/bin/seqrl grade $(SUBMISSIONS) --out $(OUT) --jobs $(JOBS) $(if $(HIDDEN),--hidden-tests $(HIDDEN),) $(if $(FEEDBACK),--feedback $(FEEDBACK),)

clean:
	rm -rf build .pytest_cache

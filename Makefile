# Multi-Shield study package. `make figures` (PROFILE=tiny by default) and `make test` bootstrap what they need.
PROFILE ?= tiny
SHARD ?=
# SHARDS=n runs the study as n submitit jobs (LAUNCHER=local|slurm, LAUNCH_ARGS='--param slurm_partition=gpu ...')
SHARDS ?=
LAUNCHER ?= local
LAUNCH_ARGS ?=
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT := figures/$(PROFILE)
RESULTS := data/stamps/results-$(PROFILE).done
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
EXECUTED := $(patsubst notebooks/%.ipynb,$(OUT)/%.ipynb,$(NOTEBOOKS))
MSLIB_SRC := $(shell find mslib -name '*.py' -o -name '*.json' -o -name '*.txt' 2>/dev/null)
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: all figures test lab course clean distclean venv system-deps results fetch bench help thumbnails $(notdir $(basename $(NOTEBOOKS)))

all: figures

help:
	@echo "make figures [PROFILE=tiny|smoke|paper]  run every notebook into $(OUT)/"
	@echo "make test                                run the test suite"
	@echo "make results [SHARD=i/n]                 compute (or resume) the cached attack results"
	@echo "make results SHARDS=n [LAUNCHER=local|slurm]  the same as n submitit jobs, then merge"
	@echo "make <notebook-name>                     one notebook, e.g. make 02_main_table"
	@echo "make fetch PROFILE=paper                 download the paper's assets (needs internet)"
	@echo "make bench                               speed benchmark -> $(OUT)/bench.json"
	@echo "make course [FORCE=1]                    the course: course/student/ and course/solutions/ from course/lessons/"
	@echo "make lab | clean | distclean"

# ---- environment -----------------------------------------------------------------------------------
venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# RobustBench's model zoo only, without its conflicting pins (timm==1.0.9): see docs/robustbench.md
	$(PY) -m pip install -q --no-deps robustbench==1.1.1
	touch $@

# Offline profiles read Fashion-MNIST from the Debian package (or $$MSLIB_DATA, or data/fashion_mnist).
system-deps:
	@if [ -n "$$MSLIB_DATA" ] || [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] \
	   || ls data/fashion_mnist/t10k-images-idx3-ubyte* >/dev/null 2>&1; then :; \
	 elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	   (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	 else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set MSLIB_DATA to a folder with the idx files"; exit 1; fi

# ---- tests -----------------------------------------------------------------------------------------
test: $(STAMP) system-deps
	$(PY) -m pytest -q

# ---- results and figures ---------------------------------------------------------------------------
results: $(RESULTS)
$(RESULTS): $(STAMP) $(MSLIB_SRC) | system-deps
	$(if $(SHARDS),$(PY) -m mslib.launch --profile $(PROFILE) --shards $(SHARDS) --executor $(LAUNCHER) $(LAUNCH_ARGS),\
	  $(PY) -m mslib.experiment --profile $(PROFILE) $(if $(SHARD),--shard $(SHARD)))
	@[ -n "$(SHARD)" ] || { mkdir -p $(@D) && touch $@; }

figures: $(EXECUTED)

$(OUT)/%.ipynb: notebooks/%.ipynb $(RESULTS)
	@mkdir -p $(OUT)
	cd notebooks && ../$(PY) -m papermill --cwd . -k python3 -p profile $(PROFILE) -p out_dir ../$(OUT) \
	  $*.ipynb ../$(OUT)/$*.tmp.ipynb --progress-bar && mv ../$(OUT)/$*.tmp.ipynb ../$(OUT)/$*.ipynb

$(notdir $(basename $(NOTEBOOKS))): %: $(OUT)/%.ipynb

# ---- the course -----------------------------------------------------------------------------------
# Student and solution notebooks from one source per lesson; a student notebook someone has edited is kept
# (FORCE=1 overwrites it). The generated folders are not committed.
course: $(STAMP)
	$(PY) -m mslib.course.build --src course/lessons --out course $(if $(FORCE),--force)

# JupyterLab on the repository (the course in course/student/, the study in notebooks/); as root (e.g. in a
# container) Jupyter refuses to start without --allow-root. LAB_ARGS passes more, e.g. LAB_ARGS="--ip=0.0.0.0 --no-browser".
LAB_ARGS ?=
lab: $(STAMP) course
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

fetch: $(STAMP)
	$(PY) -m mslib.fetch --profile $(PROFILE)

bench: $(STAMP) system-deps
	$(PY) benchmarks/bench.py --profile $(PROFILE) $(BENCH_ARGS)

clean:
	rm -rf figures/*/

distclean: clean
	find data -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf $(VENV)

# Refresh the README's thumbnails from the tiny profile's figures (committed under docs/img/).
thumbnails: $(EXECUTED)
	$(PY) -c "import sys; from PIL import Image; from pathlib import Path; \
	[Image.open(p).convert('RGB').resize((640, max(1, round(640 * Image.open(p).height / Image.open(p).width))), Image.LANCZOS).save(Path('docs/img') / p.name, optimize=True) \
	 for p in map(Path, sys.argv[1:])]" $(wildcard $(OUT)/*.png)

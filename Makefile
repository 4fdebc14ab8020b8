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
# the notebook rule runs from notebooks/, so it needs the interpreter's absolute path (VENV may be either)
PY_ABS := $(abspath $(PY))
STAMP := $(VENV)/.installed-stamp
OUT := figures/$(PROFILE)
# SET='n_samples=4 n_iter=2 device=cpu' overrides profile fields of the results step (e.g. a dry run),
# with or without SHARDS (every job of a sharded run gets them)
SET ?=
SET_ARGS = $(foreach s,$(SET),--set '$(subst ','\'',$(s))')
DATA := $(or $(MSLIB_CACHE),data)
# a run with SET overrides has its own stamp, so changing SET reruns the results step
RESULTS := $(DATA)/stamps/results-$(PROFILE)$(if $(SET),-$(shell printf '%s' '$(subst ','\'',$(SET))' | sha256sum | cut -c1-12)).done
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
EXECUTED := $(patsubst notebooks/%.ipynb,$(OUT)/%.ipynb,$(NOTEBOOKS))
# What can change a result: attacks, defense, models, data, profiles, the plan and its executor, and the
# checkpoints themselves (a swapped file reruns the step, which recomputes what used it). Tables, the
# store and the report helpers only change how results are read: they rerun the notebooks, not the attacks.
READ_SRC := mslib/tables.py mslib/store.py mslib/report.py mslib/labels.py mslib/beyond.py mslib/notebook.py
# the website only renders what the notebooks wrote: neither reruns anything
SITE_SRC := mslib/site.py mslib/browser.py
RESULTS_SRC := $(filter-out $(READ_SRC) $(SITE_SRC) mslib/course/%,$(shell find mslib -name '*.py' -o -name '*.json' -o -name '*.txt' 2>/dev/null))
CHECKPOINTS := $(shell find $(DATA)/models -type f ! -name '*.tmp' 2>/dev/null)
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: all figures test lab course clean distclean venv system-deps results fetch bench help thumbnails site train reference $(notdir $(basename $(NOTEBOOKS)))

all: figures

help:
	@echo "make figures [PROFILE=tiny|tiny-plus|smoke|paper]  run every notebook into figures/<profile>/"
	@echo "make test                                run the test suite"
	@echo "make train [PROFILE=tiny]                train the profile's models here and compare them with the released ones"
	@echo "make reference PROFILE=tiny|tiny-plus    (maintainers) this run's tables become the released reference"
	@echo "make results [SHARD=i/n]                 compute (or resume) the cached attack results"
	@echo "make results SHARDS=n [LAUNCHER=local|slurm]  the same as n submitit jobs, then merge"
	@echo "make <notebook-name>                     one notebook, e.g. make 02_main_table (computes missing results first)"
	@echo "make site [PROFILE=tiny]                 the executed notebooks as a static website -> site/<profile>/"
	@echo "make fetch PROFILE=paper                 download the paper's assets (needs internet)"
	@echo "make bench                               speed benchmark -> $(OUT)/bench.json"
	@echo "make course [FORCE=1]                    the course: course/student/ and course/solutions/ from course/lessons/"
	@echo "make lab | clean | distclean"

# ---- environment -----------------------------------------------------------------------------------
venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	# RobustBench's model zoo only, without its conflicting pins (timm==1.0.9): see docs/robustbench.md
	$(PY) -m pip install -q --no-compile --no-deps robustbench==1.1.1
	# pip byte-compiles on one core (40 s of a fresh install, torch alone most of it); compileall writes the
	# same files on every core. A file it cannot compile (a package's Python-2 example) is skipped, as pip does.
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	touch $@

# Offline profiles read Fashion-MNIST from the Debian package (or $$MSLIB_DATA, or data/fashion_mnist).
FASHION_DEB ?= /usr/share/datasets/fashion-mnist
# seconds to wait for another apt/dpkg run (unattended-upgrades, a parallel install) to release its lock
APT_WAIT ?= 900
# $(call apt_retry,ARGS): apt-get ARGS, retried every 5 s while only the package manager's lock stops it
define apt_retry
waited=0; rc=0; until out=$$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=$(APT_WAIT) $(1) 2>&1); do \
  rc=1; case "$$out" in *"Could not get lock"*|*"Unable to lock"*|*"Unable to acquire"*) ;; *) break;; esac; \
  [ $$waited -lt $(APT_WAIT) ] || break; \
  [ $$waited -gt 0 ] || echo "waiting for the package manager's lock (another install is running)..." >&2; \
  sleep 5; waited=$$((waited + 5)); rc=0; \
done; [ $$rc = 0 ] || { echo "$$out" >&2; false; }
endef

system-deps:
	@if [ -n "$$MSLIB_DATA" ] || [ -f $(FASHION_DEB)/t10k-images-idx3-ubyte.gz ] \
	   || ls data/fashion_mnist/t10k-images-idx3-ubyte* >/dev/null 2>&1; then :; \
	 elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	   { $(call apt_retry,update -qq) || true; } && { $(call apt_retry,install -y -qq dataset-fashion-mnist); }; \
	 else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set MSLIB_DATA to a folder with the idx files"; exit 1; fi

# ---- tests -----------------------------------------------------------------------------------------
# two pytest-xdist workers (one thread each), a test file per worker at a time, so a file's fixtures are
# computed once; TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 2
test: $(STAMP) system-deps
	$(PY) -m pytest -q --durations=20 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# ---- results and figures ---------------------------------------------------------------------------
results: $(RESULTS)
$(RESULTS): $(STAMP) $(RESULTS_SRC) $(CHECKPOINTS) | system-deps
	@echo "== the $(PROFILE) study's results are missing or out of date (new code, models or data): computing them" \
	  "first (python -m mslib.experiment; training and attacking from an empty cache takes $(or $(COST_$(PROFILE)),a while);" \
	  "cached models and results are reused, and an interrupted run resumes)" >&2
	$(if $(SHARDS),$(PY) -m mslib.launch --profile $(PROFILE) --shards $(SHARDS) --executor $(LAUNCHER) $(LAUNCH_ARGS) $(SET_ARGS),\
	  $(PY) -m mslib.experiment --profile $(PROFILE) $(if $(SHARD),--shard $(SHARD)) $(SET_ARGS))
	@[ -n "$(SHARD)" ] || { mkdir -p $(@D) && touch $@; }

# ends with the reproduction report: every number of the run against the released study's reference tables
figures: $(OUT)/reproduction.md

$(OUT)/reproduction.md: $(EXECUTED)
	$(PY) -m mslib.reproduce --profile $(PROFILE)

# Train every model of the profile here (instead of its released weights) and say how far each lands from
# the released one; `make figures SET=weights=train` then runs the study on them.
train: $(STAMP) system-deps
	$(PY) -m mslib.models.release_tool --train $(PROFILE)

# Maintainers, after `make figures` on the released weights: the run's tables become the reference tables
# and the README's generated numbers are rewritten from them.
reference: $(OUT)/reproduction.md
	$(PY) -m mslib.reproduce --profile $(PROFILE) --save-reference
	$(PY) -m mslib.findings --write README.md

# Said before the results step starts, so `make 02_main_table` on an empty cache does not train silently.
# Rough cold costs on 2 CPU cores (models trained, every attack run); cached models and results are reused.
COST_smoke := about 5 minutes
COST_tiny := about 15 minutes (released models, every attack)
COST_tiny-plus := three and a half to four hours more than tiny (Square at 5,000 queries about 35 min, the 4x check about 110, the robust VLM about 60)
COST_paper := many hours (a GPU machine, after make fetch PROFILE=paper)

$(OUT)/%.ipynb: notebooks/%.ipynb $(RESULTS) $(READ_SRC)
	@mkdir -p $(OUT)
	@echo "== $* on profile $(PROFILE): reads the cached results and writes $(OUT)/ (seconds to a minute)" >&2
	cd notebooks && $(PY_ABS) -m papermill --cwd . -k python3 -p profile $(PROFILE) -p out_dir $(abspath $(OUT)) \
	  $*.ipynb ../$(OUT)/$*.tmp.ipynb --progress-bar && mv ../$(OUT)/$*.tmp.ipynb ../$(OUT)/$*.ipynb

$(notdir $(basename $(NOTEBOOKS))): %: $(OUT)/%.ipynb

# ---- the study as a website ----------------------------------------------------------------------
# The executed notebooks of $(OUT) (after `make figures`) and the course's lessons, rendered by Sphinx + MyST-NB
# into site/$(PROFILE)/ without running anything; open site/$(PROFILE)/index.html.
site: $(STAMP)
	$(PY) -m mslib.site --profile $(PROFILE) --figures $(OUT) --out site/$(PROFILE)

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
	rm -rf figures/*/ site

distclean: clean
	find data -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf $(VENV)

# Refresh the README's thumbnails from the tiny profile's figures (committed under docs/img/).
thumbnails: $(EXECUTED)
	$(PY) -c "import sys; from PIL import Image; from pathlib import Path; \
	[Image.open(p).convert('RGB').resize((640, max(1, round(640 * Image.open(p).height / Image.open(p).width))), Image.LANCZOS).save(Path('docs/img') / p.name, optimize=True) \
	 for p in map(Path, sys.argv[1:])]" $(wildcard $(OUT)/*.png)

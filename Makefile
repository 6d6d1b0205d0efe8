# Two commands for people: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Isolate ROS 2 traffic to this machine unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1
# Two cores: keep BLAS/torch from oversubscribing them in tests and benchmarks.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test fuzz bench install clean

$(STAMP): pyproject.toml ros_ws/src/s2r_ros/setup.py
	@test -n "$(PYTHON)" || { echo "error: need Python >= 3.11 (python3.11 or newer on PATH)"; exit 1; }
	@echo "[s2r] creating $(VENV) with $(PYTHON) and installing (first run only, ~2 min)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	@# the distribution was called s2r before it became s2r-robotics: drop an old editable install
	$(PY) -m pip uninstall --quiet --yes s2r 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	$(PY) -m pip install --quiet -e ros_ws/src/s2r_ros
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/s2r demo

# The compute-only tests (marker `compute`, tests/conftest.py) on both cores, one BLAS thread each;
# the HIL checks (marker `paired`: real time, mostly waiting) two robots at a time; then the rest
# (real time, ROS nodes, emulators) on its own, so their clocks never share the machine.
test: $(STAMP)
	@rc=0; OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m compute --durations=15 tests || rc=$$?; \
	$(PY) -m pytest -q -n 2 --dist loadgroup -m paired --durations=5 tests || rc=$$?; \
	$(PY) -m pytest -q -m "not compute and not paired" --durations=15 tests || rc=$$?; exit $$rc

# Nightly-size adversarial run of the safety layer (tests/fuzz): S2R_FUZZ_EXAMPLES cases per state
# machine (4 machines), fresh random inputs each run (S2R_FUZZ_SEED=N to repeat one).
fuzz: $(STAMP)
	S2R_FUZZ_EXAMPLES=$${S2R_FUZZ_EXAMPLES:-2500} $(PY) -m pytest -q -p no:logging tests/fuzz

bench: $(STAMP)
	@mkdir -p bench_out
	@for b in benchmarks/bench_*.py; do \
	  n=$$(basename $$b .py); echo "== $$n"; \
	  $(PY) $$b --json bench_out/$$n.json || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info ros_ws/build ros_ws/install ros_ws/log

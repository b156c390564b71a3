.PHONY: install run test bench
install:
	bash scripts/install.sh

# The main job on the embedded defaults.
run: install
	.venv/bin/neurolabel demo

# The whole test suite (needs PostgreSQL on 127.0.0.1:5432 and Debian chromium; see scripts/test-services.sh).
test: install
	bash scripts/test-services.sh
	.venv/bin/python -m pytest -q -ra

bench: install
	for b in bench/*.py; do .venv/bin/python $$b || exit 1; done

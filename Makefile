# The few commands everyone runs. CI runs `make test` and `make lint`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-rust test-python lint fuzz bench bench-quick demo clean

## Build the Rust engine and install shoal (editable) with test, bench and mpi extras.
install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[test,bench,dev,mpi]'
	# Bytecode, as a regular install has: workers start without compiling
	# shoal's modules (which PYTHONDONTWRITEBYTECODE=1 would make every time).
	$(PYTHON) -m compileall -q python/shoal

## Install, then run every test: the engine's Rust tests and the Python suite.
test: install test-rust test-python

test-rust:
	cargo test --locked -p shoal-core

test-python:
	$(PYTHON) -m pytest

## Formatting and lints, as CI checks them.
lint: install
	cargo fmt --all --check
	cargo fmt --manifest-path crates/shoal-core/fuzz/Cargo.toml --check
	cargo clippy --locked --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benches examples
	$(PYTHON) -m ruff format --check python tests benches examples

## Fuzz the frame decoder for FUZZ_SECONDS (needs `cargo install cargo-fuzz`).
## cargo-fuzz passes nightly-only flags (sanitizers, coverage); RUSTC_BOOTSTRAP
## lets the stable compiler take them. New inputs go to the ignored corpus/.
FUZZ_SECONDS ?= 60
fuzz:
	mkdir -p crates/shoal-core/fuzz/corpus/decoder
	cd crates/shoal-core/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decoder \
		corpus/decoder seeds/decoder -- -max_total_time=$(FUZZ_SECONDS)

## shoal side by side with multiprocessing, concurrent.futures, joblib and mpire.
bench: install
	$(PYTHON) benches/compare.py

bench-quick: install
	$(PYTHON) benches/compare.py --quick

demo: install
	shoal demo

clean:
	cargo clean
	rm -rf python/shoal/*.so .pytest_cache

# switchyard — developer entry points.
#
#   make deps    install build prerequisites (cmake) if missing
#   make build   release build of both binaries
#   make run     demo: three switchyard-echo backends + switchyard on conf/switchyard.yaml
#   make test    all tests (cargo test --all-targets)
#   make bench   benchmarks (tests/bench/run.sh, then tests/bench/slow_backend.py)
#   make fmt     format the code
#   make lint    clippy, warnings are errors
#   make clean   remove build artefacts

CARGO ?= cargo

.PHONY: all deps build run test bench fmt lint clean

all: build

# pingora's native dependencies need cmake to build.
deps:
	@if command -v cmake >/dev/null 2>&1; then \
		echo "deps: cmake found at $$(command -v cmake)"; \
	elif [ "$$(id -u)" = "0" ]; then \
		echo "deps: installing cmake"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y cmake; \
	else \
		echo "deps: cmake is missing; install it with:" >&2; \
		echo "  sudo apt-get update && sudo apt-get install -y cmake" >&2; \
		exit 1; \
	fi

build: deps
	$(CARGO) build --release --bins

run: deps build
	./deploy/demo.sh

test: deps
	$(CARGO) test --all-targets

bench: build
	@if [ -x tests/bench/run.sh ]; then \
		tests/bench/run.sh; \
	elif [ -f tests/bench/run.sh ]; then \
		bash tests/bench/run.sh; \
	else \
		echo "bench: not yet available (tests/bench/run.sh does not exist)"; \
	fi
	python3 tests/bench/slow_backend.py --switchyard target/release/switchyard

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

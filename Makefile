# The two commands of the README, wrapped around CMake.
#   make run   installs what is missing, builds, runs the main job
#   make test  installs what is missing, builds, runs every test suite
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
RUN_ARGS ?=

.PHONY: all deps configure build run run-example test test-asan test-tsan fuzz bench bench-graph \
	bench-graph-quick install clean

all: build

deps:
	@sh tools/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/tools/mpx run examples/primes.yaml $(RUN_ARGS)

run-example: build
	$(BUILD)/examples/primes $(RUN_ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The same suites under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan BUILD_TYPE=Debug \
	  CMAKE_FLAGS="-DMPX_SANITIZE=address"

# And under ThreadSanitizer.
test-tsan:
	@$(MAKE) --no-print-directory test BUILD=build-tsan BUILD_TYPE=Debug \
	  CMAKE_FLAGS="-DMPX_SANITIZE=thread"

# The libFuzzer targets (clang) from their seed corpora, FUZZ_SECONDS each
# (default 30).
fuzz: deps
	tools/fuzz.sh

bench: build
	tools/bench/run

# The graph and partition benchmarks of issue 17 (docs/bench/graph.md): hours,
# the report in docs/bench/graph-results.md. The quick form (tiny inputs, no
# pre-change build) is a smoke test of the harness, in seconds.
bench-graph:
	tools/bench/graph/run.py

bench-graph-quick:
	tools/bench/graph/run.py --quick

install: build
	cmake --install $(BUILD)

clean:
	rm -rf build build-asan build-tsan build-fuzz

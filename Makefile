# Thin wrapper: the real work is in CMake and scripts/.
BUILD ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps build test demo bench format clean db-start db-stop

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

db-start: deps
	scripts/pg start

db-stop:
	scripts/pg stop

# Every test: unit tests, database tests and integration tests against a throwaway
# PostgreSQL 15 that this target starts and stops.
test: build
	scripts/run-tests $(BUILD) $(CTEST_ARGS)

demo: build
	scripts/demo $(BUILD)

bench: build
	scripts/bench $(BUILD)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf $(BUILD)

# Thin wrapper: the real work is in CMake and scripts/.
BUILD ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps build test test-asan test-tsan fuzz fuzz-build demo bench bench-online format clean db-start db-stop

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
# PostgreSQL 15 that this target starts and stops, and a short run of every fuzz harness
# over its corpus (seeds and regression inputs).
FUZZ_TEST_SECONDS ?= 15
test: build fuzz-build
	scripts/run-tests $(BUILD) $(CTEST_ARGS)
	scripts/fuzz build-fuzz $(FUZZ_TEST_SECONDS)

# The same tests on a build with AddressSanitizer and UndefinedBehaviorSanitizer
# (build-asan), and on a ThreadSanitizer build (build-tsan) the threaded modules' unit
# tests with the integration tests that run the pipeline, the metrics and the service.
# A keymig that a Python test starts writes its reports to log_path (its stderr belongs to
# the test, and a test may accept any failing exit), so each target fails on any report
# file even when every test passed.
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:log_path=$(CURDIR)/build-asan/reports/asan \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/build-asan/reports/ubsan
# history_size=7 (the most): TSan then still has the stack of the earlier access after a
# long pass, and the suppressions in tests/tsan.supp, which name TBB's functions on that
# stack, can match it. With less, an access TBB's own code made shows as "failed to
# restore the stack", and a report about TBB's task memory could not be told apart.
TSAN_ENV = TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:history_size=7:suppressions=$(CURDIR)/tests/tsan.supp:log_path=$(CURDIR)/build-tsan/reports/tsan
# $(call sanitized,BUILD,ENV,CTEST ARGS): the tests with ENV, then fail on any report.
sanitized = rm -rf $(1)/reports && mkdir -p $(1)/reports || exit 1; \
	status=0; $(2) scripts/run-tests $(1) $(3) || status=$$?; \
	scripts/sanitizer-reports $(1)/reports || status=1; exit $$status
TSAN_TESTS = ^(engine|metrics|service|http):|^integration: test_(migrate_|serve|http_|multi_targets|oneshot_metrics|progress_logs)
test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEYMIG_SANITIZE=address,undefined
	cmake --build build-asan -j $(JOBS)
	$(call sanitized,build-asan,$(ASAN_ENV),$(CTEST_ARGS))

test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEYMIG_SANITIZE=thread
	cmake --build build-tsan -j $(JOBS)
	$(call sanitized,build-tsan,$(TSAN_ENV),-R '$(TSAN_TESTS)' $(CTEST_ARGS))

# libFuzzer harnesses (tests/fuzz), built with clang: FUZZ_SECONDS per harness, or
# FUZZ_RUNS inputs if that comes first (make fuzz FUZZ_SECONDS=3600 FUZZ_RUNS=10000000).
FUZZ_SECONDS ?= 600
fuzz-build: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DKEYMIG_FUZZ=ON -DBUILD_TESTING=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzzers

fuzz: fuzz-build
	scripts/fuzz build-fuzz $(FUZZ_SECONDS) $(if $(FUZZ_RUNS),--runs $(FUZZ_RUNS))

demo: build
	scripts/demo $(BUILD)

bench: build
	scripts/bench $(BUILD)

# What sign-ins feel during a migrate (pgbench against the cluster and its standby).
bench-online: build
	scripts/bench-online $(BUILD)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf $(BUILD)

# cohort: two commands. `make run` (bootstrap, build, run the main job) and `make test`
# (bootstrap, build, run every test). Everything else is a helper for them.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all bootstrap configure build test install-python run bench docs compare compare-torch clean \
        fuzz fuzz-build fuzz-smoke fuzz-grow test-asan test-tsan check-aarch64

all: build

bootstrap:
	scripts/bootstrap

configure: bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Every test: ctest runs the gtest units and the multi-process suites (one ctest entry per
# gtest case), then pytest runs the torch backend's suite against the built package (its exit
# status counts: "no tests collected" fails too).
# Both run in a temporary folder of their own (scripts/scratch-tmp), removed afterwards.
test: build
	cd $(BUILD) && $(abspath scripts/scratch-tmp) ctest --output-on-failure --timeout 300 -j $(JOBS)
	PYTHONPATH=$(abspath $(BUILD))/python scripts/scratch-tmp /usr/bin/python3 -m pytest \
	  tests/python -q -p no:cacheprovider
	$(MAKE) fuzz-smoke
	$(MAKE) check-aarch64

# Fuzzing (tests/fuzz, docs/security.md): libFuzzer targets built with clang 14, ASan and UBSan
# in $(FUZZ_BUILD). `make fuzz` runs each for FUZZ_SECONDS and reports executions and findings;
# `make test` runs each for a few seconds (fuzz-smoke). Findings fail the run.
FUZZ_BUILD ?= $(BUILD)-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 4
LAUNCHER := $(if $(shell command -v ccache),-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache,)
fuzz-build: bootstrap
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 $(LAUNCHER) -DCOHORT_FUZZ=ON \
	  -DCOHORT_BUILD_TESTS=OFF -DCOHORT_WITH_TORCH=OFF -DCOHORT_WITH_CUDA=OFF -DCOHORT_WITH_UCX=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets

fuzz: fuzz-build
	scripts/fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Keeps what a campaign found: minimizes $(FUZZ_BUILD)/corpus into tests/fuzz/grown (commit it).
fuzz-grow: fuzz-build
	scripts/fuzz-grow $(FUZZ_BUILD)

fuzz-smoke: fuzz-build
	scripts/fuzz $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS)

# Sanitizer suites: every C++ test (ctest) built with clang 14 under ASan + UBSan, or TSan, in
# their own build directories. The torch extension is left out (torch itself is not built with
# them); .ci/run runs test-asan after make test.
SANITIZER_FLAGS = -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
	  -DCMAKE_CXX_COMPILER=clang++-14 $(LAUNCHER) -DCOHORT_WITH_TORCH=OFF -DCOHORT_WITH_CUDA=OFF
test-asan: bootstrap
	cmake -S . -B $(BUILD)-asan $(SANITIZER_FLAGS) -DCOHORT_SANITIZE=address,undefined
	cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(abspath tests/sanitizers/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(abspath scripts/scratch-tmp) ctest --output-on-failure --timeout 600 -j $(JOBS) \
	  $(SANITIZER_CTEST_FLAGS)

# TSan: the units and multi-process suites that run threads (store, coordinator, communicators
# with their progress threads, the launcher); the shell scripts of tests/cluster are left out.
TSAN_TESTS ?= ^(store_|elastic_|failures_|bounded_waits_|lane_|collectives_|rendezvous_|launcher_options_|config_)
test-tsan: bootstrap
	cmake -S . -B $(BUILD)-tsan $(SANITIZER_FLAGS) -DCOHORT_SANITIZE=thread
	cmake --build $(BUILD)-tsan -j $(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure --timeout 600 -j $(JOBS) -R '$(TSAN_TESTS)'

# Cross-compiles and links libcohort, cohortrun and cohort-bench for aarch64 (scripts/check-aarch64).
check-aarch64: bootstrap
	scripts/check-aarch64 $(BUILD)-aarch64

# Installs the `cohort` package (torch backend) into /usr/bin/python3's site-packages
# (/usr/local/lib/python3.*/dist-packages), so `import cohort` works from anywhere.
install-python: build
	cmake --install $(BUILD) --component python

# The main job (examples/run_demo.sh), on the cohort backend built here ($(BUILD)/python on the
# workers' PYTHONPATH): cohortrun trains on 4 local workers and one is killed half way, twice:
# with --on-failure restart the job restarts from its last checkpoint and finishes; with
# --on-failure shrink (examples/train_shrink.py) the survivors shrink their group and finish.
run: build
	examples/run_demo.sh $(BUILD)

# The allreduce sweep of cohort-bench on 4 local ranks (shared memory), nccl-tests style.
bench: build
	$(BUILD)/bench/cohort-bench allreduce --nranks 4 -b 8 -e 64M -f 2

# docs/config.md is generated from the COHORT_* registry (a test checks it is current).
docs: build
	$(BUILD)/bench/cohort-config --markdown > docs/config.md

# cohort vs torch's gloo, side by side in one run (2 ranks, float32 sum, 8 B to 64 MiB).
compare: build
	/usr/bin/python3 bench/compare/compare.py --build $(BUILD) --mpi --repeat 3

# The torch backend "cohort" vs gloo, both through torch.distributed.all_reduce, same run.
compare-torch: build
	/usr/bin/python3 bench/compare/compare.py --ours torch --build $(BUILD) --python-path $(abspath $(BUILD))/python --repeat 3

clean:
	rm -rf $(BUILD)

# cohort: two commands. `make run` (bootstrap, build, run the main job) and `make test`
# (bootstrap, build, run every test). Everything else is a helper for them.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all bootstrap configure build test run docs compare clean

all: build

bootstrap:
	scripts/bootstrap

configure: bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Every test: ctest runs the gtest units and the multi-process suites (one ctest entry per
# gtest case); its summary is the last thing printed.
test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 300 -j $(JOBS)

# The main job: cohortrun trains examples/train.py on 4 local workers, one worker is killed
# half way, and the job restarts from its last checkpoint and finishes (examples/run_demo.sh).
run: build
	examples/run_demo.sh $(BUILD)

# docs/config.md is generated from the COHORT_* registry (a test checks it is current).
docs: build
	$(BUILD)/bench/cohort-config --markdown > docs/config.md

# cohort vs torch's gloo, side by side in one run (2 ranks, float32 sum, 8 B to 64 MiB).
compare: build
	/usr/bin/python3 bench/compare/compare.py --bench $(BUILD)/bench/cohort-bench --repeat 3

clean:
	rm -rf $(BUILD)

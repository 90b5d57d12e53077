# cohort: two commands. `make run` (bootstrap, build, run the main job) and `make test`
# (bootstrap, build, run every test). Everything else is a helper for them.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all bootstrap configure build test install-python run bench docs compare compare-torch clean

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
test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 300 -j $(JOBS)
	PYTHONPATH=$(abspath $(BUILD))/python /usr/bin/python3 -m pytest tests/python -q -p no:cacheprovider

# Installs the `cohort` package (torch backend) into /usr/bin/python3's site-packages
# (/usr/local/lib/python3.*/dist-packages), so `import cohort` works from anywhere.
install-python: build
	cmake --install $(BUILD) --component python

# The main job: cohortrun trains examples/train.py on 4 local workers, one worker is killed
# half way, and the job restarts from its last checkpoint and finishes (examples/run_demo.sh).
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

# digin — `make help` lists the targets. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_DISABLE_TELEMETRY = 1
export IMAGENET_VAL
export IMAGENET_TRAIN
CHECKPOINT = $(if $(ROBUST_RESNET50),classifier.checkpoint=$(ROBUST_RESNET50))

.DEFAULT_GOAL := help
.PHONY: help install dev demo test test-fast test-browser test-slurm chromium bench bench-lean bench-vce bench-prompt \
        bench-spurious fig6 fig8 fig10 fig11 eval-imagenet-pairs explain-fig3 explain-fig4 explain-fig8 spurious-agreement \
        clean-outputs clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install digin

dev: $(VENV)/.dev-installed ## install digin with the test extras

demo: $(VENV)/.installed ## run the embedded CPU demo (tiny random models, disagreement, ~1 min)
	$(BIN)/digin experiment=demo

TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed ## run the whole test suite (offline, CPU; TEST_WORKERS=2 pytest-xdist processes)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: $(VENV)/.dev-installed ## the test suite without the end-to-end CLI runs
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

chromium: ## install Debian's chromium + chromium-driver for the browser checks (report.html, digin study; as root, ~1 min)
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "make chromium: needs apt-get as root; the browser tests will be skipped"; fi; }

test-browser: $(VENV)/.dev-installed chromium ## only the headless-Chromium checks (report.html, a study answered via Selenium)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m browser

# The daemons live in one temporary folder; `cluster.sh down` stops those still up by their pids even when pytest
# was killed before its own clean-up.
test-slurm: $(VENV)/.dev-installed ## sweeps on a private single-node SLURM, with and without accounting (root, apt)
	scripts/slurm/cluster.sh install
	@dir=$$(mktemp -d /tmp/digin-slurm.XXXXXX); \
	trap "for m in accounting none; do scripts/slurm/cluster.sh down $$dir/\$$m; done; rm -rf $$dir" EXIT; \
	DIGIN_TEST_SLURM=1 DIGIN_SLURM_DIR=$$dir HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -p no:xdist -m slurm $(ARGS)

bench: $(VENV)/.installed ## time / memory of one optimisation step vs T (tiny on CPU; sd15_random on GPU if present)
	$(BIN)/python scripts/bench_step.py
	MALLOC_MMAP_THRESHOLD_=65536 $(BIN)/python scripts/bench_classifier_ckpt.py  # convnext_b ckpt on/off, memory

bench-lean: $(VENV)/.installed ## the lean step before/after: two-stage backward, auto checkpointing, compile (long)
	MALLOC_MMAP_THRESHOLD_=65536 $(BIN)/python scripts/bench_step.py --suite lean $(ARGS)

bench-vce: $(VENV)/.installed ## seconds for inversion / one counterfactual, attention bytes stored per image
	$(BIN)/python scripts/bench_vce.py $(ARGS)

bench-prompt: $(VENV)/.installed ## seconds per soft-prompt step: LCM (4 steps) vs DDIM (20 steps), as a ratio
	$(BIN)/python scripts/bench_prompt.py

bench-spurious: $(VENV)/.installed ## seconds per (class, feature) of task=spurious: optimise / sample / segment (tiny on CPU)
	$(BIN)/python scripts/bench_spurious.py

# SHARDS=N splits a figure's images over N sweep jobs (task.shard_index / task.num_shards); with
# ARGS='hydra/launcher=slurm hydra.launcher.partition=<yours>' each shard is one SLURM job.
SHARDING = $(if $(SHARDS),-m task.shard_index='range($(SHARDS))' task.num_shards=$(SHARDS))

fig6: $(VENV)/.installed ## paper Fig. 6, the authors' 2,860 ImageNet UVCEs (IMAGENET_VAL=/path/to/val, real weights, GPU; SHARDS=)
	$(BIN)/digin $(SHARDING) experiment=fig6 $(ARGS)

fig8: $(VENV)/.installed ## paper Fig. 8, zero-shot CLIP viaduct UVCEs; SHARDS=8 ARGS=hydra/launcher=slurm: 8 jobs
	$(BIN)/digin $(SHARDING) experiment=fig8 $(ARGS)

fig10: $(VENV)/.installed ## paper Fig. 10, neuron counterfactuals (IMAGENET_VAL, ROBUST_RESNET50=/path/to/weights, GPU)
	$(BIN)/digin experiment=fig10 $(CHECKPOINT) $(ARGS)

fig11: $(VENV)/.installed ## paper Fig. 11, NPCA components (IMAGENET_VAL, IMAGENET_TRAIN, ROBUST_RESNET50, GPU)
	$(BIN)/digin experiment=fig11 $(CHECKPOINT) $(ARGS)
	$(BIN)/digin experiment=fig11 $(CHECKPOINT) task.component_class=fireboat task.component=2 \
		'task.image_classes=[grey whale,pirate ship]' $(ARGS)

# ACE's ImageNet protocol: the run (a sweep folder, SHARDS=N jobs like fig8), then digin evaluate beside the published
# FID. PAIRS_OUT is where it goes; EVAL_ARGS reach digin evaluate (e.g. --simsiam=/path/to/checkpoint_0099.pth.tar).
PAIRS_OUT ?= outputs/paper/imagenet_pairs
DIGIN ?= $(BIN)/digin
eval-imagenet-pairs: $(VENV)/.installed ## ACE's ImageNet pairs: explain, evaluate, published numbers beside (IMAGENET_VAL, GPU)
	@test -n "$(IMAGENET_VAL)" || { echo "make eval-imagenet-pairs: set IMAGENET_VAL=/path/to/imagenet/val (one folder per class)"; exit 2; }
	@test -d "$(IMAGENET_VAL)" || { echo "make eval-imagenet-pairs: ImageNet val folder '$(IMAGENET_VAL)' not found — set IMAGENET_VAL=/path/to/imagenet/val"; exit 2; }
	$(DIGIN) $(if $(SHARDS),$(SHARDING),-m) experiment=imagenet_pairs hydra.sweep.dir=$(PAIRS_OUT) $(ARGS)
	$(DIGIN) evaluate $(PAIRS_OUT) --protocol imagenet_pairs $(EVAL_ARGS)

explain-fig3: $(VENV)/.installed ## DiffExplainer Fig. 3: "dog sled", "bee", "flagpole" (ROBUST_RESNET50=/path/to/weights, GPU)
	$(BIN)/digin experiment=explain_fig3 $(CHECKPOINT) $(ARGS)

explain-fig4: $(VENV)/.installed ## DiffExplainer Fig. 4: "a texture of" / "a shape of" prefixes for "bee" (same ARGS)
	$(BIN)/digin -m experiment=explain_fig4 $(CHECKPOINT) $(ARGS)

explain-fig8: $(VENV)/.installed ## DiffExplainer Fig. 8: hard-prompt text explanation of "bee" (same ARGS)
	$(BIN)/digin experiment=explain_fig8 $(CHECKPOINT) $(ARGS)

spurious-agreement: $(VENV)/.installed ## DiffExplainer Fig. 6 agreement table (ANNOTATIONS=salient.csv, ROBUST_RESNET50, GPU)
	@test -n "$(ANNOTATIONS)" || { echo "make spurious-agreement: set ANNOTATIONS=/path/to/annotations.csv (columns class, feature, label core|spurious, optional groups)"; exit 2; }
	@test -f "$(ANNOTATIONS)" || { echo "make spurious-agreement: annotation file '$(ANNOTATIONS)' not found"; exit 2; }
	$(BIN)/digin experiment=spurious_salient task.annotations=$(abspath $(ANNOTATIONS)) $(CHECKPOINT) $(ARGS)

clean-outputs: ## delete run outputs
	rm -rf outputs

clean: clean-outputs ## delete run outputs and the virtual environment
	rm -rf $(VENV)

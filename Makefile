# The README's two commands. Everything installs into .venv inside the checkout.
#   make demo   set up, then run DIYSink finetuning on the embedded tiny LLaVA (2 CPU ranks)
#   make test   set up, then run the test suite
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
# Keep DeepSpeed's JIT-built ops inside the checkout (CI caches nothing outside the clone).
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: demo test setup clean

setup: $(READY)

# torch first (a bare `torch` requirement would pull CUDA wheels); deepspeed's build imports torch.
# DeepSpeed JIT-compiles its CPU shared-memory op (~40 s) in the first run's ranks; it is built here
# instead, while the other packages download, with the PATH the runs use: the venv's ninja first
# (another ninja on PATH would build it again). On a GPU machine there is nothing to build.
$(READY): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-build-isolation deepspeed
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" \
		> $(VENV)/deepspeed-ops.log 2>&1 & ops=$$!; \
	$(PY) -m pip install --quiet -e ".[dev]"; installed=$$?; \
	wait $$ops || { echo "DeepSpeed's CPU op did not build:"; tail -20 $(VENV)/deepspeed-ops.log; exit 1; }; \
	exit $$installed
	touch $(READY)

demo: $(READY)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH deepspeed --num_gpus 2 recipes/diysink_finetune.py --ds_config ds_configs/zero3.json

# pytest-xdist workers: one per two cores (a DeepSpeed test runs 2 ranks), at most 4; below 4 cores
# none (0: in this process): on 2 cores, parallel ranks and OpenMP threads spin-wait on each other
# and a parallel run took longer. Slurm tests share one worker and its cluster.
TEST_WORKERS ?= $(shell python3 -c 'import os; n = min(4, (os.cpu_count() or 1) // 2); print(n if n >= 2 else 0)')
test: $(READY)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) .cache runs

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
$(READY): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-build-isolation deepspeed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(READY)

demo: $(READY)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH deepspeed --num_gpus 2 recipes/diysink_finetune.py --ds_config ds_configs/zero3.json

# pytest-xdist: one worker per core (at most 4); Slurm tests share one worker and its cluster
test: $(READY)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -n auto --maxprocesses 4 --dist loadgroup

clean:
	rm -rf $(VENV) .cache runs

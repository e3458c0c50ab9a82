"""Run tests/export/load_export.py on exports: a fresh process in which sinktrain cannot be imported.

    results = load_exports(jobs, workdir)   # jobs: [{"kind", "dir", "inputs"}], inputs saved with torch.save
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

LOADER = Path(__file__).resolve().parent / "export" / "load_export.py"
NEW_TOKENS = 6  # load_export.NEW_TOKENS


def load_exports(jobs: list[dict], workdir: Path, env: dict | None = None) -> list[dict]:
    """What each export computed: {"logits", "tokens", "class"}; offline unless ``env`` says otherwise."""
    for index, job in enumerate(jobs):
        job.setdefault("out", str(workdir / f"loaded-{index}.pt"))
    (workdir / "jobs.json").write_text(json.dumps(jobs))
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HOME": str(workdir / "hf_home"), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "OMP_NUM_THREADS": str(torch.get_num_threads())}  # this process's: the same reduction order as the reference
    done = subprocess.run(
        [sys.executable, str(LOADER), str(workdir / "jobs.json")], cwd=workdir, env={**base, **(env or {})},
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(job["out"]) for job in jobs]


@torch.no_grad()
def reference(model, inputs: dict) -> dict:
    """The same forward and greedy generate() on the training-time (sinktrain) model."""
    model.eval()
    tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return {"logits": model(**inputs).logits, "tokens": tokens}


def assert_same(exported: dict, expected: dict) -> None:
    # fp32, the same code and weights: equal up to float reassociation (seen: 2e-5 on a logit of ~10)
    torch.testing.assert_close(exported["logits"], expected["logits"], rtol=1e-4, atol=1e-4)
    assert torch.equal(exported["tokens"], expected["tokens"])

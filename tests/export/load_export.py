"""Load sinktrain exports the way a user without sinktrain does, and record what they compute.

    python tests/export/load_export.py jobs.json

Runs in a fresh process in which ``import sinktrain`` fails (an import blocker goes first on
sys.meta_path, so even the editable install is unreachable): only transformers, torch and the
export's own files. Each job {"kind": "remote" | "adapter", "dir", "inputs", "out"} loads the
export (``AutoModelForImageTextToText.from_pretrained(dir, trust_remote_code=True)``, with
``device_map`` when the job names one, or the LSG
adapter's loader through transformers' dynamic modules; ``dir`` may be a Hub repo id), runs one
forward and a greedy ``generate`` on the saved inputs, and saves {"logits", "tokens", "class"} to
``out`` (tests/fresh_load.py runs it and reads the results). A job's "questions" go to a ReW model's ``set_questions``. Kind "untrusted" loads without
``trust_remote_code`` and saves the error transformers raises.
"""

import importlib.abc
import json
import sys


class NoSinktrain(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sinktrain" or name.startswith("sinktrain."):
            raise ImportError(f"{name} is blocked: exports must load without sinktrain")
        return None


sys.meta_path.insert(0, NoSinktrain())
sys.path = [p for p in sys.path if not p.endswith(("/tests", "/tests/export")) and p not in ("", ".")]

import torch  # noqa: E402
from transformers import AutoModelForImageTextToText  # noqa: E402
from transformers.dynamic_module_utils import get_class_from_dynamic_module  # noqa: E402

NEW_TOKENS = 6


def load(job: dict):
    if job["kind"] == "remote":
        placement = {"device_map": job["device_map"]} if job.get("device_map") else {}
        return AutoModelForImageTextToText.from_pretrained(job["dir"], trust_remote_code=True, **placement)
    return get_class_from_dynamic_module("lsg_adapter.load_gated_model", job["dir"])(job["dir"])


@torch.no_grad()
def run(job: dict) -> None:
    if job["kind"] == "untrusted":
        try:
            AutoModelForImageTextToText.from_pretrained(job["dir"], trust_remote_code=False)
        except ValueError as error:
            return torch.save({"error": str(error)}, job["out"])
        raise AssertionError(f"{job['dir']} loaded without trust_remote_code")
    model = load(job).eval()
    inputs = torch.load(job["inputs"])
    if job.get("questions") and getattr(getattr(model, "slotted", None), "rew", None):  # DIYSink with ReW
        model.set_questions(job["questions"])
    logits = model(**inputs).logits
    tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS)
    torch.save({"logits": logits, "tokens": tokens, "class": type(model).__name__}, job["out"])


if __name__ == "__main__":
    for job in json.loads(open(sys.argv[1]).read()):
        run(job)
    print("loaded", len(json.loads(open(sys.argv[1]).read())), "exports")

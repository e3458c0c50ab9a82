"""Every embedded demo artefact is bitwise reproducible from its seed, whatever the process and thread count.

The session's cache is built in this process (the fixtures of the other tests, torch's default
thread count); a second cache is built here by ``python -m sinktrain.demo`` in a fresh process
with another OpenMP thread count. Both must hold the same files with the same bytes: every
family's demo model, the training, eval, multi-image and caption shards, the sentence encoder.

The trained demo models (450 finetuning steps, one to three minutes per family) are checked by
short builds of every family instead: SHORT_STEPS steps, once in this process and once in that
fresh one, written outside the cache (``--steps N --out DIR``), must give the same bytes. A
short build stands for the full one: it is the same code (``pretrain_demo_model``, only the step
count and so the schedule's length differ), and the full finetune is more of the same steps,
each a deterministic function (under ``reproducible``) of the weights, optimizer state and
batch before it, so a step that depended on the process or thread count would show within
these (OneVision's short build meets multi-image samples too: 7 of its 64). The full builds' own bytes
are pinned by the LSG thresholds measured on them (and were compared, with and without the
encoder's memory, for LLaVA and Qwen2-VL by hand: the same hashes). Past the
short builds' reach is the second pass over the data (step 151 on), whose examples come from
the encoder's memory: ``test_trained.py`` checks that they are the encoder's examples.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinktrain import demo

from console import check_quiet

ROOT = Path(__file__).resolve().parents[2]
SHORT_STEPS = 4
pytestmark = pytest.mark.multiprocess


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def assert_same_bytes(first_root: Path, second_root: Path) -> None:
    first, second = digests(first_root), digests(second_root)
    assert first and first.keys() == second.keys(), first_root.name
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, f"{first_root.name}: {differing}"


def rebuild_elsewhere(cache: Path, short_out: Path) -> None:
    """Every demo artefact into ``cache`` and short trained builds into ``short_out``, in a fresh process."""
    env = dict(os.environ, SINKTRAIN_CACHE=str(cache), OMP_NUM_THREADS="2" if os.cpu_count() == 1 else "1")
    command = [sys.executable, "-m", "sinktrain.demo", "--trained", *demo.BUILDERS, "--steps", str(SHORT_STEPS), "--out", str(short_out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)  # ~1 min idle
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check_quiet(done.stdout + done.stderr)


def test_two_builds_give_the_same_bytes(tmp_path):
    # In this process, with torch's default threads (built already if other tests ran first).
    models = {name: demo.ensure_demo_model(name) for name in demo.BUILDERS}
    shard_sets = [demo.demo_data_pattern(), demo.demo_eval_pattern(), demo.demo_multi_image_pattern(), demo.demo_caption_pattern()]
    built_here = [*models.values(), *(Path(pattern).parent for pattern in shard_sets), demo.ensure_demo_sentence_encoder()]
    for name in models:
        demo.trained_builder(name, SHORT_STEPS)(tmp_path / "short-here" / name)
    rebuild_elsewhere(tmp_path / "cache", tmp_path / "short-there")
    rebuilt = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert rebuilt == sorted(p.name for p in built_here)  # and no short build among them
    for original in built_here:
        assert_same_bytes(original, tmp_path / "cache" / original.name)
    for name, base in models.items():
        assert_same_bytes(tmp_path / "short-here" / name, tmp_path / "short-there" / name)
        trained = digests(tmp_path / "short-here" / name)["model.safetensors"]
        assert trained != digests(base)["model.safetensors"], f"{name}: the short build did not train"

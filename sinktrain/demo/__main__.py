"""``python -m sinktrain.demo [--trained FAMILY ...] [--steps N --out DIR]``: build the demo artefacts into the cache and print where.

Every family's demo model, the demo shards (training, eval, multi-image, captions) and the
demo sentence encoder always; trained variants of the families named
after ``--trained`` (default: every family; ``--trained`` alone: none). With ``--steps N`` the
trained variants are finetuned for N steps only and written to ``DIR/FAMILY``, never into the
cache (whose trained models are the full finetune): the reproducibility test's short builds.
"""

import argparse
from pathlib import Path

from sinktrain.demo import (
    BUILDERS, demo_caption_pattern, demo_data_pattern, demo_eval_pattern, demo_multi_image_pattern, ensure_demo_model, ensure_demo_sentence_encoder,
    ensure_demo_trained_model, trained_builder,
)
from sinktrain.log import quiet_third_party


def trained_model(name: str, steps: int | None, out: Path | None) -> Path:
    """The cached trained model, or a short finetune of ``steps`` into ``out/name``."""
    if steps is None:
        return ensure_demo_trained_model(name)
    trained_builder(name, steps)(out / name)
    return out / name


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--trained", nargs="*", choices=sorted(BUILDERS), default=list(BUILDERS), help="families whose trained demo model to build")
parser.add_argument("--steps", type=int, help="finetune the trained models for this many steps only, into --out (not the cache)")
parser.add_argument("--out", type=Path, help="where --steps writes its trained models, one directory per family")
args = parser.parse_args()
if (args.steps is None) != (args.out is None):
    parser.error("--steps and --out go together")
quiet_third_party()
for name in BUILDERS:
    print(f"demo:{name}:".ljust(26), ensure_demo_model(name))
    if name in args.trained:
        print(f"demo:{name} trained:".ljust(26), trained_model(name, args.steps, args.out))
print("demo shards:".ljust(26), demo_data_pattern())
print("eval shards:".ljust(26), demo_eval_pattern())
print("multi-image shards:".ljust(26), demo_multi_image_pattern())
print("caption shards:".ljust(26), demo_caption_pattern())
print("sentence encoder:".ljust(26), ensure_demo_sentence_encoder())

"""``python -m sinktrain.demo [--trained FAMILY ...]``: build the demo artefacts into the cache and print where.

Every family's demo model and the demo shards always; trained variants of the families named
after ``--trained`` (default: every family; ``--trained`` alone: none).
"""

import argparse

from sinktrain.demo import BUILDERS, demo_data_pattern, demo_eval_pattern, ensure_demo_model, ensure_demo_trained_model

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--trained", nargs="*", choices=sorted(BUILDERS), default=list(BUILDERS), help="families whose trained demo model to build")
args = parser.parse_args()
for name in BUILDERS:
    print(f"demo:{name}:".ljust(20), ensure_demo_model(name))
    if name in args.trained:
        print(f"demo:{name} trained:".ljust(20), ensure_demo_trained_model(name))
print("demo shards:".ljust(20), demo_data_pattern())
print("eval shards:".ljust(20), demo_eval_pattern())

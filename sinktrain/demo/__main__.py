"""``python -m sinktrain.demo``: build every demo artefact into the cache and print where it is."""

from sinktrain.demo import BUILDERS, demo_data_pattern, demo_eval_pattern, ensure_demo_model, ensure_demo_trained_model

for name in BUILDERS:
    print(f"demo:{name}:".ljust(20), ensure_demo_model(name))
    print(f"demo:{name} trained:".ljust(20), ensure_demo_trained_model(name))
print("demo shards:".ljust(20), demo_data_pattern())
print("eval shards:".ljust(20), demo_eval_pattern())

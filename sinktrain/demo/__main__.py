"""``python -m sinktrain.demo``: build every demo artefact into the cache and print where it is."""

from sinktrain.demo import demo_data_pattern, demo_eval_pattern, ensure_demo_model, ensure_demo_trained_model

print("demo model: ", ensure_demo_model())
print("trained:    ", ensure_demo_trained_model())
print("demo shards:", demo_data_pattern())
print("eval shards:", demo_eval_pattern())

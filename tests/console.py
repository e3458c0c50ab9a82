"""What a recipe or tool prints must be free of third-party noise (sinktrain.log.quiet_third_party)."""

# torch's deprecation warnings, transformers' progress bars, DeepSpeed's schedulers' false alarm (sinktrain.log)
NOISE = ("FutureWarning", "Loading weights", "Writing model shards", "Attempting to get learning rate from scheduler")


def check_quiet(console: str) -> None:
    for noise in NOISE:
        assert noise not in console, console[max(console.index(noise) - 500, 0) :][:1000]

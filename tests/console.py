"""What a recipe or tool prints must be free of third-party noise (sinktrain.log.quiet_third_party)."""

NOISE = ("FutureWarning", "Loading weights", "Writing model shards")  # torch's deprecation warnings, transformers' progress bars


def check_quiet(console: str) -> None:
    for noise in NOISE:
        assert noise not in console, console[max(console.index(noise) - 500, 0) :][:1000]

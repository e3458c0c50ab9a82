"""Tiny benchmark datasets in their public schema, written as the Hub stores them (parquet files
per config and split, a README with the ``configs`` YAML), so the loader reads them exactly like a
downloaded copy."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, Features
from PIL import Image


def picture(seed: int, size: int = 40) -> Image.Image:
    """A small RGB image that differs per seed (what the image columns hold)."""
    return Image.new("RGB", (size + seed % 7, size), ((37 * seed) % 256, (91 * seed) % 256, (53 * seed) % 256))


def write_hub_dataset(root: Path, splits: dict[str, list[dict]], features: Features, config: str = "default") -> Path:
    """``root`` as a local copy of a Hub dataset repo: ``{config}/{split}-00000-of-00001.parquet``
    for every split and a README whose YAML declares them (as ``huggingface-cli download`` gives)."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for split, rows in splits.items():
        name = f"{config}/{split}-00000-of-00001.parquet"
        (root / config).mkdir(exist_ok=True)
        Dataset.from_list(rows, features=features).to_parquet(str(root / name))
        entries.append(f"  - split: {split}\n    path: {name}")
    readme = root / "README.md"
    previous = readme.read_text().split("configs:\n", 1)[1].rstrip("-\n") + "\n" if readme.exists() else ""
    readme.write_text(f"---\nconfigs:\n{previous}- config_name: {config}\n  data_files:\n" + "\n".join(entries) + "\n---\n")
    return root

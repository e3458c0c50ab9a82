"""Tiny benchmark datasets in their public schema, written as the Hub stores them (parquet files
per config and split, a README with the ``configs`` YAML), so the loader reads them exactly like a
downloaded copy."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

MMSTAR_FEATURES = Features({
    "index": Value("int64"), "question": Value("string"), "image": ImageFeature(), "answer": Value("string"),
    "category": Value("string"), "l2_category": Value("string"),
    "meta_info": {"source": Value("string"), "split": Value("string"), "image_path": Value("string")},
})


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


def mmstar_row(index: int, answer: str, category: str, l2: str) -> dict:
    """An MMStar row as Lin-Chen/MMStar stores it (options inside the question)."""
    question = f"What is shown in picture {index}?\nOptions: A: a red cat, B: a dog, C: three birds, D: nothing"
    meta = {"source": "MMBench", "split": "val", "image_path": f"images/{index}.jpg"}
    return {"index": index, "question": question, "image": picture(index), "answer": answer, "category": category, "l2_category": l2, "meta_info": meta}

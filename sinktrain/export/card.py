"""The model card (README.md) of an exported run: Hub metadata plus what the model is and how it was made.

    info = CardInfo(method="diysink", family="llava", base_model="llava-hf/llava-1.5-7b-hf", ...,
                    eval_results=eval_results_in(Path("runs/diysink")))
    write_model_card(Path("export/diysink"), info)   # -> export/diysink/README.md, checked offline

The YAML block is built with ``huggingface_hub.ModelCardData`` and read back with
``ModelCard.load`` before the export counts as written (``ModelCard.validate`` would ask the Hub,
and exports are often made on machines that cannot reach it). Fields that are unknown (None, empty)
are left out of both the metadata and the text, never printed as "None".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from sinktrain.errors import SinkTrainError

PIPELINE_TAG = "image-text-to-text"
LIBRARY = "transformers"
METHODS = ("diysink", "lsg")

ABOUT = {
    "diysink": (
        "DIYSink, from *To Sink or Not to Sink: Visual Information Pathways in Large Vision-Language Models*. "
        "The vision encoder's V-sinks (the few visual tokens with massive activations) carry global, high-level "
        "information, so DIYSink gives them a pathway of their own: a DualMLP connector projects V-sink tokens and "
        "the other visual tokens with separate projectors before they reach the language model."
    ),
    "lsg": (
        "LSG (Layer-wise Sink Gating), from *When Sinks Help or Hurt*. At chosen language-model layers a small "
        "learned gate scales the attention keys of the vision encoder's V-sinks and of the other visual tokens "
        "separately, so each layer decides how much attention the sinks draw. The backbone stays frozen: only the "
        "gates are trained."
    ),
}
CRITERIA = {
    "dim_threshold": "a visual token is a V-sink when `max |h[vit_dims]| >= tau_v` on vision hidden state `vit_layer`",
    "l2_norm": "a visual token is a V-sink when its L2 norm `||h||_2 >= tau_v` on vision hidden state `vit_layer`",
}


@dataclass
class CardInfo:
    method: str  # "diysink" | "lsg"
    family: str  # backbone family: "llava", "llava_onevision", "qwen2_vl", "deepseek_vl"
    base_model: str | None  # Hub id of the run's base; None when it was a local directory
    base_revision: str | None
    title: str
    license: str | None
    datasets: list[str]  # Hub dataset ids the run trained on; may be empty
    sink_profile: dict  # the profile JSON (sinktrain.backbones.profiles schema)
    method_settings: dict  # DIYSink: sink_first, sink rule; LSG: layers, groups
    training: dict  # steps, world_size, lr, global batch size, precision, ZeRO stage, data, epochs
    remote_code: bool = False  # loading needs trust_remote_code=True
    adapter: bool = False  # LSG gates only, attached to the stock base model
    usage: str = ""  # a Python snippet that loads and runs the export
    eval_results: list[dict] = field(default_factory=list)  # rows from eval_results_in


def model_card(info: CardInfo) -> ModelCard:
    if info.method not in METHODS:
        raise SinkTrainError(f"model card: method {info.method!r} is unknown; use one of {METHODS}")
    return ModelCard("---\n" + card_data(info).to_yaml() + "\n---\n" + body(info))


def card_data(info: CardInfo) -> ModelCardData:
    tags = ["sinktrain", "attention-sinks", info.method, info.family] + (["custom_code"] if info.remote_code else [])
    return ModelCardData(
        base_model=info.base_model,
        base_model_relation="adapter" if info.adapter else "finetune",
        license=info.license,
        datasets=list(info.datasets) or None,
        pipeline_tag=PIPELINE_TAG,
        library_name=LIBRARY,
        tags=tags,
    )


def body(info: CardInfo) -> str:
    sections = [
        f"# {info.title}",
        intro(info),
        "## How to load\n\n" + loading(info),
        "## Sink profile\n\n" + profile_section(info.sink_profile),
        "## Method settings\n\n" + key_value_table(info.method_settings),
        "## Training\n\n" + key_value_table(info.training),
    ]
    if info.eval_results:
        sections.append("## Evaluation\n\n" + rows_table(info.eval_results))
    return "\n\n".join(sections) + "\n"


def intro(info: CardInfo) -> str:
    base = f"[{info.base_model}](https://huggingface.co/{info.base_model})" if info.base_model else "a local base model"
    base += f" (revision `{info.base_revision}`)" if info.base_revision else ""
    if info.adapter:
        what = f"LSG gates for {base}"
    elif info.method == "lsg":
        what = f"{base} with trained LSG gates built in"
    else:
        what = f"A fine-tune of {base}"
    what = what[:1].upper() + what[1:]  # "a local base model ..." opens the card
    return f"{what}, a `{info.family}` model, trained with sinktrain using {ABOUT[info.method]}"


def loading(info: CardInfo) -> str:
    notes = []
    if info.adapter:
        notes.append("This repository holds only the trained gates; they attach to the stock base model, which is loaded unchanged.")
    if info.remote_code:
        # the connector / gating code ships in this repository, not in transformers
        notes.append("Loading needs `trust_remote_code=True`: the method's modules are code files in this repository (read them before running).")
    snippet = f"```python\n{info.usage.strip()}\n```" if info.usage.strip() else ""
    return "\n\n".join([*notes, snippet]).strip()


def profile_section(profile: dict) -> str:
    lines = []
    rule = CRITERIA.get(profile.get("criterion"))
    if rule:
        lines.append(f"Sinks are found with this profile: {rule}{l_sink_rule(profile)}.")
    stats = profile.get("stats") or {}
    if stats.get("images"):  # the full statistics stay in the profile JSON; the card names their source
        lines.append(f"Measured by {stats.get('tool', 'sinktrain')} on {stats['images']} images.")
    lines.append(key_value_table({k: v for k, v in profile.items() if k != "stats"}))
    return "\n\n".join(lines)


def l_sink_rule(profile: dict) -> str:
    if not profile.get("llm_dims"):
        return ""
    normed = " (h after weightless RMSNorm)" if profile.get("llm_rms_norm", True) else ""
    return f"; a visual token that is not a V-sink is an L-sink in a language-model layer when `max |h[llm_dims]| >= tau_l`{normed}"


def known(value) -> bool:
    return value is not None and value != [] and value != {} and value != ""


def key_value_table(values: dict) -> str:
    rows = [(key, value) for key, value in values.items() if known(value)]
    if not rows:
        return "Not recorded."
    return "\n".join(["| setting | value |", "| --- | --- |", *[f"| {escape(str(k))} | {cell(v)} |" for k, v in rows]])


def rows_table(rows: list[dict]) -> str:
    """Benchmarks and eval sets in one table: their names share the first column, samples last."""
    named = [{"evaluation": row.get("benchmark", row.get("eval set", "")), **{k: v for k, v in row.items() if k not in ("benchmark", "eval set")}} for row in rows]
    columns = list(dict.fromkeys(key for row in named for key in row if key != "samples"))
    columns += ["samples"] if any("samples" in row for row in named) else []
    header = ["| " + " | ".join(escape(c) for c in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    return "\n".join(header + ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in named])


def cell(value) -> str:
    if value is None:
        return ""  # an unknown score is an empty cell, not "None"
    if isinstance(value, bool):
        return str(value).lower()  # as the profile JSON spells it
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:g}"  # a learning rate is not 0.00
    if isinstance(value, (list, tuple)):
        return escape(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return escape(json.dumps(value, default=str))
    return escape(str(value))


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_model_card(directory: Path, info: CardInfo) -> Path:
    """Write ``directory/README.md`` and check it reads back as the metadata it was built from."""
    path = Path(directory) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    model_card(info).save(path)
    check_model_card(path, info)
    return path


def check_model_card(path: Path, info: CardInfo) -> None:
    """Offline checks of a written card: the YAML parses to a dict, the keys the Hub needs are
    there, and it holds exactly the metadata ``info`` gives; a SinkTrainError names what is wrong."""
    expected = card_data(info).to_dict()
    try:
        found = ModelCard.load(path).data.to_dict()
    except Exception as err:  # yaml's and huggingface_hub's parse errors share no base class
        raise SinkTrainError(f"model card {path}: its metadata block does not parse ({err}); rewrite it with write_model_card") from err
    required = ["library_name", "pipeline_tag", "tags"] + ["base_model"] * bool(info.base_model) + ["license"] * bool(info.license)
    missing = [key for key in required if key not in found]
    if missing:
        raise SinkTrainError(f"model card {path}: metadata lacks {missing}; the Hub needs them to list and load the model")
    if found != expected:
        changed = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise SinkTrainError(f"model card {path}: metadata {changed} read back differently from what was written; rewrite it with write_model_card")
    check_pipeline_tag(found["pipeline_tag"], path)


def check_pipeline_tag(tag: str, path: Path) -> None:
    from transformers.pipelines import SUPPORTED_TASKS  # imports every pipeline: only when a card is checked

    if tag not in SUPPORTED_TASKS:
        raise SinkTrainError(f"model card {path}: pipeline_tag {tag!r} is not a transformers pipeline task; use {PIPELINE_TAG!r}")


def eval_results_in(run_dir: Path) -> list[dict]:
    """One row per tools/evaluate.py results file in ``run_dir`` or a folder right under it
    (e.g. runs/NAME/eval/*.json); other JSON (ds_config.json, trainer_state.json, ...) is skipped."""
    run_dir = Path(run_dir)
    rows = []
    for path in sorted([*run_dir.glob("*.json"), *run_dir.glob("*/*.json")]):
        data = read_json(path)
        if is_benchmark_run(data):
            rows.append(benchmark_row(data))
        elif is_eval_set_run(data):
            rows.append(eval_set_row(data, path.relative_to(run_dir).with_suffix("").as_posix()))
    return rows


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a half-written or foreign file is not a results file


def is_benchmark_run(data) -> bool:
    """sinktrain.benchmarks.report.to_dict's shape."""
    return isinstance(data, dict) and isinstance(data.get("benchmark"), str) and isinstance(data.get("scores"), dict)


def is_eval_set_run(data) -> bool:
    """sinktrain.eval.results.Results.to_dict's shape."""
    return isinstance(data, dict) and "method" in data and isinstance(data.get("per_category"), dict) and "accuracy" in data


def benchmark_row(data: dict) -> dict:
    method = str(data.get("method", "stock")) + (" + LSG gates" if data.get("gates") else "")
    row = {"benchmark": data["benchmark"], "method": method, **data["scores"]}
    return row | ({"samples": data["samples"]} if "samples" in data else {})


def eval_set_row(data: dict, name: str) -> dict:
    categories = {k: v for k, v in data["per_category"].items() if k != "overall" and isinstance(v, dict)}
    row = {"eval set": name, "method": data["method"], "accuracy": data["accuracy"]}
    row |= {f"accuracy ({c})": v.get("accuracy") for c, v in categories.items()}
    overall = data["per_category"].get("overall") or {}
    samples = overall.get("count", len(data.get("predictions", [])))
    return row | {"samples": samples}

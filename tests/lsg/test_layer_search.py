"""tools/lsg_layer_search.py end to end on the trained demo LLaVA: two single-layer runs of
recipes/lsg_train.py (real DeepSpeed processes, 2 checkpoints each standing for the epochs), each
evaluated on an MMStar-shaped local dataset; the table, gains, best layer per block and heatmap;
a second search trains nothing and reads its caches; tools/stack_gates.py stacks from its table."""

import json

import pytest
from PIL import Image

from hub_data import MMSTAR_FEATURES, mmstar_row, write_hub_dataset
from scripts import load_script
from sinktrain.errors import SinkTrainError

LAYERS = [1, 2]
ROWS = [mmstar_row(i, "ABCD"[i % 4], "math" if i % 2 else "coarse perception", f"l2 {i % 3}") for i in range(6)]
RECIPE_FLAGS = ["--max_steps", "2", "--save_every", "1", "--per_device_batch_size", "2", "--num_workers", "1"]

pytestmark = pytest.mark.multiprocess  # two training runs of the recipe


def load_tool(name: str):
    return load_script(f"tools/{name}.py")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    copy = write_hub_dataset(root / "MMStar", {"val": ROWS}, MMSTAR_FEATURES)
    out = root / "out"
    flags = ["--layers", "1-2", "--benchmark", "mmstar", "--benchmark_path", f"mmstar={copy}", "--out", str(out),
             "--batch_size", "3", "--max_new_tokens", "4", "--", *RECIPE_FLAGS]
    load_tool("lsg_layer_search").main(flags)
    return out, flags, copy


def test_every_layer_trained_alone_and_evaluated_at_every_epoch(search):
    out, _, _ = search
    table = json.loads((out / "search.json").read_text())
    assert sorted(table["layers"], key=int) == [str(layer) for layer in LAYERS]
    stock = table["stock"]["mmstar"]
    assert set(stock) == {"coarse perception", "math", "overall"}
    for layer in LAYERS:
        run_info = json.loads((out / f"layer_{layer:02d}" / "run_info.json").read_text())
        assert json.loads((out / f"layer_{layer:02d}" / "gates" / "gates.json").read_text())["layers"] == [layer], run_info
        epochs = table["layers"][str(layer)]
        assert [epochs[e]["step"] for e in ("1", "2")] == ["step_000001", "step_000002"]
        for entry in epochs.values():
            scores, gains = entry["scores"]["mmstar"], entry["gains"]["mmstar"]
            assert gains == {task: scores[task] - stock[task] for task in stock}
    (best,) = table["best_per_block"]["1"]  # layers 1-2 lie in the block 0-3
    means = {layer: table["layers"][str(layer)]["1"]["gains"]["mmstar"]["overall"] for layer in LAYERS}
    assert best["block"] == "0-3" and best["mean_gain"] == max(means.values())
    assert best["layer"] == min(layer for layer in LAYERS if means[layer] == best["mean_gain"])
    markdown = (out / "search.md").read_text()
    assert "| mmstar: coarse perception | mmstar: math | mmstar: overall |" in markdown.replace("| layer ", "")
    assert f"| {best['layer']} * |" in markdown
    with Image.open(out / "heatmap.png") as heatmap:
        assert heatmap.format == "PNG" and heatmap.size[0] > 300


def test_rerun_trains_nothing_reads_its_caches_and_stacking_reads_the_table(search, capsys, tmp_path):
    out, flags, copy = search
    cached = out / "layer_02" / "eval" / "mmstar_step_000001.json"
    planted = json.loads(cached.read_text()) | {"overall": 101.0}  # a cached score the second search must reuse
    cached.write_text(json.dumps(planted))
    capsys.readouterr()
    load_tool("lsg_layer_search").main(flags)
    printed = capsys.readouterr().out
    assert all(f"layer {layer}: trained" in printed for layer in LAYERS)
    table = json.loads((out / "search.json").read_text())
    assert table["layers"]["2"]["1"]["scores"]["mmstar"]["overall"] == 101.0
    assert table["ranked_layers"]["1"][0] == 2
    stack = load_tool("stack_gates")
    flags_stack = ["--search", str(out / "search.json"), "--top", "2", "--out", str(tmp_path / "stack"),
                   "--benchmark", "mmstar", "--benchmark_path", f"mmstar={copy}", "--batch_size", "3", "--max_new_tokens", "4", "--keep", "all"]
    assert stack.parse_args(flags_stack).gates == [table["layers"][str(layer)]["1"]["gates"] for layer in table["ranked_layers"]["1"][:2]]
    stack.main(flags_stack)
    stacking = json.loads((tmp_path / "stack" / "stacking.json").read_text())
    assert stacking["samples"] == len(ROWS)  # scored on the benchmark's questions
    assert set(stacking["steps"][0]["per_category"]) == {"mmstar: coarse perception", "mmstar: math", "overall"}
    # the stock step scores what the search's stock evaluation scored
    assert stacking["steps"][0]["per_category"]["mmstar: math"] == table["stock"]["mmstar"]["math"]
    assert sorted(json.loads((tmp_path / "stack" / "gates.json").read_text())["layers"]) == sorted(table["ranked_layers"]["1"][:2])
    with pytest.raises(SinkTrainError, match="--epoch 3: the runs saved epochs \\[1, 2\\]"):
        load_tool("lsg_layer_search").main([*flags[: flags.index("--")], "--epoch", "3"])

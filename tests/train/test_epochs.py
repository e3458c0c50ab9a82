"""Epochs to steps: --num_epochs over local shards, --save_every_epoch, and the LSG recipe's
paper defaults on a real model (constant lr, global batch 128, 2 epochs, a checkpoint per epoch,
one layer), which explicit flags override."""

import io
import tarfile
from pathlib import Path

from scripts import load_script
from sinktrain.train.args import common_parser, parse
from sinktrain.data.shard_index import shard_sizes
from sinktrain.train.run import resolve_config



def shard(path: Path, samples: int) -> str:
    """A tar shard holding ``samples`` keys (the index counts keys, not their contents)."""
    with tarfile.open(path, "w") as tar:
        for key in range(samples):
            data = b"{}"
            info = tarfile.TarInfo(f"{path.stem}-{key:04d}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def steps(tmp_path, samples: int, world: int, *flags: str):
    args = parse(common_parser("test"), ["--model", "some/model", *flags])
    resolve_config(args, tmp_path / "run", hidden_size=64, world_size=world, samples=sum(shard_sizes([shard(tmp_path / "a.tar", samples)])))
    return args.max_steps, args.save_every


def test_epochs_and_a_checkpoint_per_epoch(tmp_path):
    flags = ("--per_device_batch_size", "2", "--ds_config", "zero3")
    assert steps(tmp_path, 10, 1, *flags, "--num_epochs", "2") == (10, 500)  # 5 steps an epoch; --save_every's default
    assert steps(tmp_path, 10, 1, *flags, "--num_epochs", "2", "--save_every_epoch") == (10, 5)
    assert steps(tmp_path, 11, 2, *flags, "--num_epochs", "2", "--save_every_epoch") == (6, 3)  # 11 / 4 = 2.75 a epoch
    assert steps(tmp_path, 10, 1, *flags, "--max_steps", "7", "--save_every_epoch") == (7, 5)


def lsg_recipe():
    return load_script("recipes/lsg_train.py")


def test_lsg_recipe_defaults_to_the_papers_setting_on_a_real_model(tmp_path):
    recipe = lsg_recipe()
    args = recipe.parse_args(["--model", "llava-hf/llava-1.5-7b-hf"])
    assert (args.ds_config, args.num_epochs, args.save_every_epoch, args.layers) == ("ds_configs/lsg_paper.json", 2.0, True, [10])
    # global batch 128 on 2 ranks of 16: accumulation 4; 300 samples: 3 steps an epoch, 5 in all
    assert steps(tmp_path, 300, 2, "--ds_config", args.ds_config, "--num_epochs", "2", "--save_every_epoch") == (5, 3)
    assert "single-layer gate at layer 10" in recipe.training_mode(args.layers)
    args = recipe.parse_args(["--model", "m", "--layers", "3,6", "--num_epochs", "1", "--ds_config", "zero3"])
    assert (args.ds_config, args.num_epochs, args.layers) == ("zero3", 1.0, [3, 6])
    assert "joint multi-layer training of layers [3, 6] (the paper's ablation" in recipe.training_mode(args.layers)
    demo = recipe.parse_args([])
    assert demo.layers == [1, 2, 3] and demo.ds_config == "ds_configs/zero3.json" and not demo.save_every_epoch

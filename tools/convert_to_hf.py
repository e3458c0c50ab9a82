"""Convert a sinktrain run to a Hugging Face model directory, and optionally upload it to the Hub.

    python tools/convert_to_hf.py runs/NAME --out hf/NAME                 # the latest checkpoint
    python tools/convert_to_hf.py runs/NAME --step 2000 --out hf/NAME-2000 --dtype bf16
    python tools/convert_to_hf.py runs/NAME --out hf/NAME --push_to_hub USER/REPO --private

Runs offline on CPU: DeepSpeed's own ZeRO consolidation reads the checkpoint of any number of
ranks, and the run's run_config.json names the base model, sink profile and method. DIYSink runs
(and LSG runs with --full) become the whole model with the method as remote code:

    model = AutoModelForImageTextToText.from_pretrained("hf/NAME", trust_remote_code=True)

LSG runs become the trained gates alone plus a loader that attaches them to the stock base model
(the model card shows how). The directory holds safetensors shards, the processor,
generation_config.json, the run record and a model card (README.md, with the run's
tools/evaluate.py results when they sit in the run directory); it appears only once complete.
--push_to_hub uploads it with huggingface_hub, with the token from `hf auth login` or HF_TOKEN
(never from the command line).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.export.convert import DTYPES, ExportOptions, export_run  # noqa: E402
from sinktrain.export.hub import check_repo_id, push_folder, require_token  # noqa: E402
from sinktrain.log import setup_logging  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402

logger = logging.getLogger("sinktrain")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run's --output_dir (holds run_config.json and checkpoints/)")
    parser.add_argument("--out", type=Path, required=True, help="the export directory to write")
    parser.add_argument("--step", type=int, default=None, help="convert this step's checkpoint; default: the latest")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights' dtype; default: the run's precision")
    parser.add_argument("--full", action="store_true", help="LSG: the whole model with remote code, not the gates alone")
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (once the new export is complete)")
    parser.add_argument("--license", default=None, help="the model card's license, e.g. llama2 or apache-2.0 (the base model's terms)")
    parser.add_argument("--dataset", nargs="*", default=[], help="Hub ids of the training data, for the model card")
    parser.add_argument("--push_to_hub", default=None, metavar="USER/REPO", help="upload the export to this Hub repository")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: create the repository private")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging(0)
    if args.push_to_hub:  # before minutes of conversion
        check_repo_id(args.push_to_hub)
        require_token()
    options = ExportOptions(
        step=args.step, dtype=args.dtype, full=args.full, max_shard_size=args.max_shard_size, overwrite=args.overwrite,
        license=args.license, datasets=tuple(args.dataset), repo_id=args.push_to_hub,
    )
    out = export_run(args.run_dir, args.out, options)
    logger.info("exported %s -> %s", args.run_dir, out)
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, args.private, f"sinktrain export of run {args.run_dir.resolve().name}")
        logger.info("uploaded to %s", url)


if __name__ == "__main__":
    main_guard(main)

"""Discover a backbone's sink dimensions and thresholds; write the sink profile every recipe reads.

    python tools/find_sink_dims.py                        # the embedded demo LLaVA and demo shards
    python tools/find_sink_dims.py --model llava-hf/llava-1.5-7b-hf \\
        --data 'shards/{000000..000009}.tar' --num_images 300 --out profiles/llava-1.5-7b.json
    python tools/find_sink_dims.py --model MODEL --images photos/ --out profiles/NAME.json
    deepspeed --num_gpus 8 tools/find_sink_dims.py --model MODEL --data ... --out ...   # images split over ranks
    python tools/find_sink_dims.py --print-known          # the built-in profiles

then ``recipes/diysink_finetune.py --model MODEL --sink_profile profiles/NAME.json`` (or any recipe).

One prefill pass over the images with forward hooks fills per layer and channel statistics of
fixed size (sinktrain/find_sinks/stats.py); ranks add them up. A sink dim is a channel massive
relative to its layer's median magnitude (--min_ratio, 100) in most images, on few tokens, and in
most layers from its first such layer on (sinktrain/find_sinks/select.py explains the rule); the
vision tower is read at the layer feeding the connector (per patch, and per LLM slot where the
connector merges patches), the LLM on every token (massive dims show first at the first token and
at delimiters; the summary says where each dim shows). tau_V / tau_L sit in the widest empty gap
of the primary dim's log-magnitude histogram, tau_L on visual tokens that are not V-sinks (LLM
values read as --l_sink_values says: after weightless RMSNorm, VAR's rule, or raw, the LSG paper's
on LLaVA-OneVision; by default the model family's; the LLM's primary dim is the chosen one largest
there, so a dim massive only at the first token does not hide the L-sinks). A tenfold jump in
L-sinks from one layer to the next is warned about and marked in the plot: likely the threshold
firing on ordinary tokens as the residual norm grows (the LSG paper's L19+ artefact). Writes the
profile (JSON), PNG plots beside it (--plot_dir) and prints a summary table. When no channel qualifies it says "no sink
dimension found", lists the best candidates, and exits 2 without writing a profile.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from sinktrain import demo  # noqa: E402
from sinktrain.backbones.profiles import check_l_sink_reach, save_profile  # noqa: E402
from sinktrain.data.stream import expand_shards  # noqa: E402
from sinktrain.data.chat import FORMATS  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.find_sinks.analyse import Settings, analyse  # noqa: E402
from sinktrain.find_sinks.capture import VSinkFlag, read_index  # noqa: E402
from sinktrain.find_sinks.collect import collect  # noqa: E402
from sinktrain.find_sinks.images import folder_items, image_files, shard_items  # noqa: E402
from sinktrain.find_sinks.plots import write_plots  # noqa: E402
from sinktrain.find_sinks.probe import load_unprofiled  # noqa: E402
from sinktrain.find_sinks.profile import Identity, build_profile  # noqa: E402
from sinktrain.find_sinks.report import artefact_warning, known_profiles_table, summary_table  # noqa: E402
from sinktrain.find_sinks.select import Rule  # noqa: E402
from sinktrain.log import setup_logging  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.modeling.sinks import CRITERIA  # noqa: E402

logger = logging.getLogger("sinktrain")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
L_SINK_VALUES = ("rms", "raw")  # Backbone.l_sink_values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--print-known", "--print_known", dest="print_known", action="store_true", help="list the built-in sink profiles and exit")
    src = parser.add_argument_group("model and images")
    src.add_argument("--model", default=None, help="model directory or hub id, or demo:FAMILY (llava, qwen2_vl, qwen2_5_vl, llava_onevision, deepseek_vl, deepseek_vl_hybrid); default: demo (the tiny LLaVA)")
    src.add_argument("--data", default=None, help="WebDataset shards, e.g. 'shards/{000000..000009}.tar'; default: the demo shards")
    src.add_argument("--images", default=None, help="a folder of image files instead of --data")
    src.add_argument("--num_images", type=int, default=300, help="images to profile (the first ones, over all ranks)")
    src.add_argument("--batch_size", type=int, default=8, help="images per forward on each rank")
    src.add_argument("--template", choices=sorted(FORMATS), default=None, help="prompt template; default: the model family's")
    src.add_argument("--min_pixels", type=int, default=None, help="Qwen-VL: resize images to at least this many pixels")
    src.add_argument("--max_pixels", type=int, default=None, help="Qwen-VL: resize images to at most this many pixels")
    src.add_argument("--device", default=None, help="default: this rank's GPU, else cpu")
    src.add_argument("--precision", choices=sorted(PRECISIONS), default=None, help="default: bf16 on GPU, fp32 on CPU")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help="profile JSON; default: profiles/<model name>.json")
    out.add_argument("--name", default=None, help="the profile's name; default: --out's file name")
    out.add_argument("--plot_dir", default=None, help="PNG plots; default: <out without .json>_plots/")
    rule = parser.add_argument_group("what counts as a sink dimension (sinktrain/find_sinks/select.py)")
    rule.add_argument("--min_ratio", type=float, default=Rule.min_ratio, help="massive: >= this x the layer's median magnitude")
    rule.add_argument("--min_magnitude", type=float, default=Rule.min_magnitude, help="massive also needs >= this absolute value (Sun et al. use 100 on 7B models)")
    rule.add_argument("--min_image_fraction", type=float, default=Rule.min_image_fraction, help="massive in at least this fraction of images")
    rule.add_argument("--max_token_fraction", type=float, default=Rule.max_token_fraction, help="massive on at most this fraction of visual tokens")
    rule.add_argument("--min_layer_fraction", type=float, default=Rule.min_layer_fraction, help="massive in at least this fraction of layers from its first one on")
    given = parser.add_argument_group("overrides (skip that choice)")
    given.add_argument("--vit_dims", default=None, help="comma-separated ViT sink dims, primary first")
    given.add_argument("--llm_dims", default=None, help="comma-separated LLM sink dims, primary first")
    given.add_argument("--tau_v", type=float, default=None, help="V-sink threshold")
    given.add_argument("--tau_l", type=float, default=None, help="L-sink threshold")
    given.add_argument("--tau_l2", type=float, default=None, help="threshold of DIYSink's L2-norm rule (proposed from the token-norm histogram)")
    given.add_argument("--high_res_dims", default=None, help="DeepSeek-VL-Hybrid: comma-separated SAM-branch sink dims")
    given.add_argument("--tau_high_res", type=float, default=None, help="DeepSeek-VL-Hybrid: SAM-branch V-sink threshold")
    given.add_argument("--criterion", choices=CRITERIA, default="dim_threshold", help="V-sink rule: max |h[dims]| >= tau_v (LSG) or ||h||_2 >= tau_v (DIYSink)")
    given.add_argument(
        "--l_sink_values", choices=L_SINK_VALUES, default=None,
        help="threshold LLM values after weightless RMSNorm (rms, VAR) or raw (raw, LSG on LLaVA-OneVision); default: the model family's",
    )
    given.add_argument("--no_rms_norm", dest="l_sink_values", action="store_const", const="raw", help="deprecated: --l_sink_values raw")
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    args = parser.parse_args(argv)
    check_args(args)
    return args


def dim_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise SinkTrainError(f"{flag} {text!r}: give comma-separated channel indices, e.g. {flag} 2533,1415") from err
    if not dims or min(dims) < 0:
        raise SinkTrainError(f"{flag} {text!r}: give non-negative channel indices, e.g. {flag} 2533,1415")
    return dims


def check_args(args: argparse.Namespace) -> None:
    args.vit_dims, args.llm_dims = dim_list(args.vit_dims, "--vit_dims"), dim_list(args.llm_dims, "--llm_dims")
    args.high_res_dims = dim_list(args.high_res_dims, "--high_res_dims")
    if args.data and args.images:
        raise SinkTrainError("--data and --images both given; profile either shards or a folder of images")
    for name in ("num_images", "batch_size"):
        if getattr(args, name) < 1:
            raise SinkTrainError(f"--{name} {getattr(args, name)}: pass a positive number")
    for name in ("min_image_fraction", "max_token_fraction", "min_layer_fraction"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise SinkTrainError(f"--{name} {getattr(args, name)}: pass a fraction between 0 and 1")
    if args.min_ratio <= 1.0:
        raise SinkTrainError(f"--min_ratio {args.min_ratio}: massive means far above the median; pass e.g. 100")


def distributed() -> tuple[int, int]:
    """Rank and world size; a process group only when a launcher (deepspeed, torchrun) or srun started several."""
    from sinktrain.train.distributed import init_distributed, launched

    return init_distributed() if launched() else (0, 1)


def pick_device(args: argparse.Namespace) -> torch.device:
    if args.device:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def check_dims(dims: list[int] | None, width: int, flag: str) -> None:
    if dims and max(dims) >= width:
        raise SinkTrainError(f"{flag} {dims}: this model's width is {width}, so channels go from 0 to {width - 1}")


def build_settings(args: argparse.Namespace, backbone) -> Settings:
    check_dims(args.vit_dims, backbone.vision_width, "--vit_dims")
    check_dims(args.llm_dims, backbone.llm_width, "--llm_dims")
    if (args.high_res_dims or args.tau_high_res is not None) and backbone.high_res_width is None:
        raise SinkTrainError("--high_res_dims / --tau_high_res describe DeepSeek-VL-Hybrid's SAM branch, which this model does not have")
    check_dims(args.high_res_dims, backbone.high_res_width or 0, "--high_res_dims")
    rule = Rule(args.min_ratio, args.min_image_fraction, args.min_layer_fraction, args.max_token_fraction, args.min_magnitude)
    read = read_index(backbone.sink_profile.vit_layer, len(backbone.vision_layers()))
    rms_norm = l_sink_values(args, backbone) == "rms"
    check_l_sink_reach("--tau_l", args.tau_l, rms_norm, backbone.llm_width)  # now, not after the pass
    persist = read - 1 if backbone.vision_read_after_norm else read
    return Settings(
        rule, read, args.criterion, rms_norm, args.vit_dims, args.llm_dims, args.tau_v, args.tau_l, persist,
        args.high_res_dims, args.tau_high_res, args.tau_l2,
    )


def l_sink_values(args: argparse.Namespace, backbone) -> str:
    """--l_sink_values, else the family's: the papers read L-sinks RMS-normalised (VAR, LLaVA-1.5)
    or raw (LSG on LLaVA-OneVision), and a threshold means something else in each."""
    return args.l_sink_values or backbone.l_sink_values


def check_sources(args: argparse.Namespace) -> None:
    if args.images:
        image_files(args.images)
    elif args.data:
        expand_shards(args.data)


def image_items(args: argparse.Namespace, rank: int, world_size: int):
    from sinktrain.train.run import on_main_first  # imports deepspeed

    if args.images:
        return folder_items(args.images, args.num_images, rank, world_size)
    return shard_items(args.data or on_main_first(demo.demo_data_pattern), args.num_images, rank, world_size)


def output_paths(args: argparse.Namespace, model: str) -> tuple[Path, Path, str]:
    out = Path(args.out or Path("profiles") / f"{Path(model.rstrip('/')).name}.json")
    plots = Path(args.plot_dir) if args.plot_dir else out.parent / f"{out.stem}_plots"
    return out, plots, args.name or out.stem


def identity(backbone) -> Identity:
    return Identity(
        vision_tower=backbone.vision_tower_id(backbone.model.config), vit_layer=backbone.sink_profile.vit_layer,
        hidden_size_vit=backbone.vision_width, hidden_size_llm=backbone.llm_width, hidden_size_high_res=backbone.high_res_width,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.print_known:
        print(known_profiles_table())
        return
    check_sources(args)  # before any weight is loaded
    rank, world_size = distributed()
    setup_logging(rank)
    from sinktrain.train.run import on_main_first  # imports deepspeed: not for --print-known or flag errors

    model = on_main_first(lambda: demo.resolve(args.model))
    device = pick_device(args)
    dtype = PRECISIONS[args.precision or ("bf16" if device.type == "cuda" else "fp32")]
    backbone = load_unprofiled(model, dtype)
    backbone.set_pixel_limits(args.min_pixels, args.max_pixels)
    backbone.model.to(device)
    settings = build_settings(args, backbone)
    vflag = VSinkFlag(args.min_ratio, args.min_magnitude, args.criterion, args.vit_dims, args.tau_v)
    logger.info(
        "find_sink_dims: %s | %d images over %d ranks | %s %s | L-sinks read %s", model, args.num_images, world_size, device, dtype,
        "RMS-normalised" if settings.llm_rms_norm else "raw",
    )
    template = args.template or backbone.default_template
    stats = collect(
        backbone, image_items(args, rank, world_size), vflag, args.batch_size, template, device,
        normed=settings.llm_rms_norm, norms=True,  # token L2 norms: the criterion, or DIYSink's rule proposed beside it
    )
    if rank == 0:  # the totals are the same on every rank; one writes
        finish(args, backbone, settings, stats.to_cpu(), model)


def finish(args: argparse.Namespace, backbone, settings: Settings, stats, model: str) -> None:
    """Analyse the summed statistics, draw the plots, write the profile, print the summary."""
    if int(stats.images) == 0:
        raise SinkTrainError("no image was read; check --data / --images (text-only samples are skipped)")
    findings = analyse(stats, settings)
    if findings.artefact_layers:
        per_image = [n / int(stats.images) for n in findings.l_sinks]
        logger.warning(artefact_warning(findings.artefact_layers, per_image, findings.l.tau, settings.llm_rms_norm))
    out, plot_dir, name = output_paths(args, model)
    plots = write_plots(stats, findings, settings, plot_dir)  # also when nothing is found: they show why
    profile, notes = build_profile(findings, settings, identity(backbone), name)
    save_profile(profile, out)
    print(summary_table(profile))
    for note in notes:
        print(f"note: {note}")
    if int(stats.images) < args.num_images:
        print(f"note: only {int(stats.images)} images were found (--num_images {args.num_images})")
    print(f"wrote {out} and {len(plots)} plots in {plot_dir}")


if __name__ == "__main__":
    main_guard(main)

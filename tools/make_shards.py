"""Convert LLaVA-format JSON + an image folder into WebDataset shards for sinktrain.

    python tools/make_shards.py --json llava_v1_5_mix665k.json --image_folder ./playground/data \\
        --out 'shards/%06d.tar' [--max_samples_per_shard 1000] [--max_bad_fraction 0.01]

Each record becomes one sample (<key>.json + the image's original bytes as <key>.<ext>). A record
whose "image" is a list of paths (LLaVA-OneVision's multi-image data, one <image> marker per
image in the text) stores them as <key>.0.<ext>, <key>.1.<ext>, ... in list order. Records
whose image is missing or unreadable, or whose conversation is malformed or has another number
of <image> markers than images, are skipped and reported. The run fails (exit 1, nothing written) if more than --max_bad_fraction of the records
would be skipped: that usually means a wrong --image_folder or an image set not downloaded.
Shards are moved into place only once all of them are written.

A stratified draw (the LSG paper's training set: 10K samples, 1667 from each of Cambrian-7M's six
categories) is one flag: --balance_by FIELD --per_category N [--seed S] keeps N records of every
value of FIELD (any JSON field), drawn and shuffled reproducibly from the seed before any image
is read; the summary counts what was written per value.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter

from sinktrain.data.balance import balanced_records
from sinktrain.data.shards import (
    ReadStats,
    check_shard_pattern,
    llava_json_samples,
    write_shards,
)
from sinktrain.errors import SinkTrainError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="LLaVA-format JSON list of records")
    parser.add_argument(
        "--image_folder", required=True, help="folder the records' 'image' paths are relative to"
    )
    parser.add_argument("--out", required=True, help="shard pattern, e.g. 'shards/%%06d.tar'")
    parser.add_argument("--max_samples_per_shard", type=int, default=1000)
    parser.add_argument("--balance_by", default=None, help="a record field (e.g. category): the same number of records per value")
    parser.add_argument("--per_category", type=int, default=None, help="records per value with --balance_by; default: the smallest value's count")
    parser.add_argument("--seed", type=int, default=0, help="the --balance_by draw's seed")
    parser.add_argument(
        "--max_bad_fraction",
        type=float,
        default=0.01,
        help="fail if more than this fraction of records is skipped (default 0.01)",
    )
    args = parser.parse_args(argv)
    if (args.per_category is not None) and not args.balance_by:
        parser.error("--per_category needs --balance_by FIELD")
    if args.per_category is not None and args.per_category < 1:
        parser.error(f"--per_category {args.per_category}: pass a positive number")
    return args


def balanced(args: argparse.Namespace):
    """The record chooser of --balance_by, or None."""
    if not args.balance_by:
        return None
    return lambda records: balanced_records(records, args.balance_by, args.per_category, args.seed, args.json)


class CountedBy:
    """Passes samples through, counting them by one record field (the --balance_by summary)."""

    def __init__(self, field: str | None):
        self.field, self.counts = field, Counter()

    def __call__(self, samples):
        for sample in samples:
            if self.field:
                self.counts[str(sample[0].get(self.field))] += 1
            yield sample


def guarded(samples, stats: ReadStats, max_bad_fraction: float):
    """Pass samples through, failing as soon as the skipped share is certain to exceed the limit.

    stats.total is known up front, so there is no need to read 665k images to learn that a
    whole image set is missing.
    """
    allowed = max_bad_fraction * stats.total
    for sample in samples:
        _check_bad(stats, allowed, max_bad_fraction)
        yield sample
    _check_bad(stats, allowed, max_bad_fraction)


def _check_bad(stats: ReadStats, allowed: float, max_bad_fraction: float) -> None:
    if stats.num_skipped > allowed:
        raise SinkTrainError(
            f"{stats.num_skipped} of {stats.total} records skipped so far, more than "
            f"--max_bad_fraction {max_bad_fraction} allows ({_reasons(stats)}); check "
            "--image_folder and that every image set is downloaded, or raise --max_bad_fraction"
        )


def _reasons(stats: ReadStats) -> str:
    return "; ".join(
        f"{reason}: {count} (e.g. {', '.join(stats.examples[reason])})"
        for reason, count in stats.skipped.most_common()
    )


def print_summary(paths: list[str], stats: ReadStats, counted: CountedBy) -> None:
    print(f"wrote {stats.kept} samples to {len(paths)} shards ({paths[0]} .. {paths[-1]})")
    if counted.field:
        print(f"per {counted.field}: " + ", ".join(f"{value} {count}" for value, count in sorted(counted.counts.items())))
    share = stats.num_skipped / max(stats.total, 1)
    print(f"skipped {stats.num_skipped} of {stats.total} records ({share:.2%})")
    for reason, count in stats.skipped.most_common():
        print(f"  {reason}: {count} (e.g. {', '.join(stats.examples[reason])})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stats, counted = ReadStats(), CountedBy(args.balance_by)
    try:
        check_shard_pattern(args.out)  # before loading a JSON that may be a gigabyte
        samples = llava_json_samples(args.json, args.image_folder, stats, balanced(args))
        if stats.total == 0:
            raise SinkTrainError(f"{args.json!r} has no records; point --json at a non-empty list")
        paths = write_shards(
            counted(guarded(samples, stats, args.max_bad_fraction)), args.out, args.max_samples_per_shard
        )
    except SinkTrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_summary(paths, stats, counted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

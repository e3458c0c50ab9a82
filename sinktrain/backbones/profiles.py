"""Sink profiles: the backbone facts every recipe needs about sinks, in one JSON schema.

A profile says where V-sinks are read (the vision layer feeding the connector), which channels
carry the massive activations (ViT and LLM), the thresholds and the criterion. The built-in
profiles below are the published facts (LSG appendix Table S7, DIYSink, Sun et al. 2024);
``tools/find_sink_dims.py`` writes the same schema for new backbones and every recipe reads it
with ``--sink_profile FILE``.

Schema (JSON object; unknown keys are refused so typos surface)::

    {
      "name": "clip-vit-l-14-336",        # free text
      "vision_tower": "clip-vit-l-14-336", # the vision tower this profile belongs to
      "vit_dims": [650],                  # V-sink channels of the vision features
      "vit_layer": -2,                    # hidden-state index the dims are read at
      "criterion": "dim_threshold",       # or "l2_norm" (DIYSink's ||h||_2 >= tau_v)
      "tau_v": 60.0,
      "tau_l2": 100.0,                    # DIYSink's L2-norm tau on the same tensor (sink_rule "diysink"); may be null
      "llm_dims": [2533, 1415],           # L-sink channels (primary first); may be empty
      "tau_l": 20.0,
      "llm_rms_norm": true,               # true: weightless RMSNorm before thresholding (VAR); false: raw
      "hidden_size_vit": 1024,            # guards against applying a profile to another tower
      "hidden_size_llm": 4096,
      "sink_branch": "low_res",           # DeepSeek-VL-Hybrid: V-sinks of "low_res" (SigLIP), "high_res" (SAM) or "either"
      "high_res_dims": [],                # Hybrid: V-sink channels of the SAM tensor the aligner receives
      "tau_high_res": null,               # Hybrid: tau_V on that tensor (same criterion)
      "hidden_size_high_res": null,       # Hybrid: its width (guards against swapping the branches)
      "stats": {...}                      # optional, written by find_sink_dims.py
    }

``vit_dims`` / ``tau_v`` always describe the tensor the connector's first input is read on; a
profile with any high-resolution fact belongs to a DeepSeek-VL-Hybrid model.

Each paper has its own V-sink rule, chosen by name (``SinkProfile.with_rule``): ``lsg``, the
dimension threshold ``max |h[vit_dims]| >= tau_v`` (LSG Sec. 3.1; dim 650, tau 60 on CLIP
ViT-L), and ``diysink``, the token L2 norm ``||h||_2 >= tau_l2`` (DIYSink Sec. 3: tau ~ 100 on
CLIP ViT-L, 3-5 sinks per image). A profile whose ``criterion`` is ``l2_norm`` already is the
DIYSink rule (``tau_v`` is then its L2 tau).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinktrain.errors import SinkTrainError
from sinktrain.modeling.sinks import CRITERIA

SINK_RULES = ("auto", "diysink", "lsg")  # DIYSink's L2 norm, LSG's dimension threshold (with_rule)
BRANCHES = ("low_res", "high_res", "either")  # which vision branch defines V-sinks (DeepSeek-VL-Hybrid)
HYBRID_KEYS = ("sink_branch", "high_res_dims", "tau_high_res", "hidden_size_high_res")

logger = logging.getLogger("sinktrain")

FIND_DIMS_HINT = (
    "run `python tools/find_sink_dims.py --model MODEL --out profiles/NAME.json` to discover its "
    "sink dimensions, then pass `--sink_profile profiles/NAME.json`"
)


@dataclass(frozen=True)
class SinkProfile:
    name: str
    vision_tower: str
    vit_dims: list[int]
    vit_layer: int
    criterion: str
    tau_v: float
    tau_l2: float | None = None
    llm_dims: list[int] = field(default_factory=list)
    tau_l: float | None = None
    llm_rms_norm: bool = True
    hidden_size_vit: int | None = None
    hidden_size_llm: int | None = None
    sink_branch: str = "low_res"
    high_res_dims: list[int] = field(default_factory=list)
    tau_high_res: float | None = None
    hidden_size_high_res: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise SinkTrainError(f"sink profile {self.name!r}: criterion {self.criterion!r} is unknown; use one of {CRITERIA}")
        if self.sink_branch not in BRANCHES:
            raise SinkTrainError(f"sink profile {self.name!r}: sink_branch {self.sink_branch!r} is unknown; use one of {BRANCHES}")
        if self.criterion == "dim_threshold" and self.sink_branch != "high_res" and not self.vit_dims:
            raise SinkTrainError(f"sink profile {self.name!r}: criterion dim_threshold needs vit_dims (a list of channel indices)")
        if self.sink_branch != "low_res":
            if self.tau_high_res is None or (self.criterion == "dim_threshold" and not self.high_res_dims):
                raise SinkTrainError(
                    f"sink profile {self.name!r}: sink_branch {self.sink_branch!r} reads V-sinks on the SAM branch, which needs "
                    "tau_high_res" + (" and high_res_dims" if self.criterion == "dim_threshold" else "")
                    + "; tools/find_sink_dims.py measures them on a DeepSeek-VL-Hybrid model"
                )
        if self.llm_dims and self.tau_l is None:
            raise SinkTrainError(f"sink profile {self.name!r}: llm_dims are given but tau_l is missing")
        if self.hidden_size_llm is not None:
            check_rms_reach(self, self.hidden_size_llm)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not self.hybrid:  # only DeepSeek-VL-Hybrid's profiles speak of a second branch
            for key in HYBRID_KEYS:
                del data[key]
        return json.dumps(data, indent=2) + "\n"

    @property
    def knows_l2_rule(self) -> bool:
        return self.criterion == "l2_norm" or self.tau_l2 is not None

    def with_rule(self, rule: str) -> "SinkProfile":
        """This profile reading V-sinks with one paper's rule: ``lsg`` (dimension threshold), ``diysink``
        (L2 norm) or ``auto`` (DIYSink's where the profile knows its tau, else the profile's own)."""
        if rule not in SINK_RULES:
            raise SinkTrainError(f"unknown sink rule {rule!r}; use one of {', '.join(SINK_RULES)}")
        if rule == "auto":
            return self.with_rule("diysink") if self.knows_l2_rule and self.sink_branch == "low_res" else self
        if rule == "lsg":
            if self.criterion != "dim_threshold":
                raise SinkTrainError(
                    f"sink profile {self.name!r} holds only an L2-norm rule (criterion l2_norm), not LSG's dimension rule; "
                    f"pass --sink_rule diysink, or a profile with vit_dims and tau_v: {FIND_DIMS_HINT}"
                )
            return self
        if self.criterion == "l2_norm":
            return self
        if self.tau_l2 is None:
            raise SinkTrainError(
                f"sink profile {self.name!r} has no L2-norm threshold (tau_l2) for DIYSink's rule; pass --sink_rule lsg "
                f"for the dimension rule, or measure one: {FIND_DIMS_HINT} (it proposes tau_l2)"
            )
        if self.sink_branch != "low_res":
            raise SinkTrainError(
                f"sink profile {self.name!r} reads V-sinks on the SAM branch (sink_branch {self.sink_branch!r}), where "
                "DIYSink's L2 rule has no threshold; pass --sink_rule lsg"
            )
        return dataclasses.replace(self, name=f"{self.name} (diysink rule)", criterion="l2_norm", tau_v=self.tau_l2)

    @property
    def hybrid(self) -> bool:
        """Whether the profile describes a high-resolution (SAM) branch: DeepSeek-VL-Hybrid's."""
        return self.sink_branch != "low_res" or bool(self.high_res_dims) or self.hidden_size_high_res is not None

    def check_fits(self, hidden_size_vit: int, hidden_size_llm: int, hidden_size_high_res: int | None = None) -> None:
        """Refuse a profile written for a backbone of other widths (its dims would be meaningless).
        ``hidden_size_high_res``: the width of the model's SAM branch (DeepSeek-VL-Hybrid), else None."""
        if self.hybrid and hidden_size_high_res is None:
            raise SinkTrainError(
                f"sink profile {self.name!r} describes a high-resolution SAM branch (sink_branch {self.sink_branch!r}, "
                f"high_res_dims {self.high_res_dims}), which only DeepSeek-VL-Hybrid has, but this model has none; use a "
                f"profile made for this model: {FIND_DIMS_HINT}"
            )
        widths = [("vision", self.hidden_size_vit, hidden_size_vit), ("LLM", self.hidden_size_llm, hidden_size_llm)]
        if hidden_size_high_res is not None:
            widths.append(("SAM-branch", self.hidden_size_high_res, hidden_size_high_res))
        for label, expected, actual in widths:
            if expected is not None and expected != actual:
                swapped = label != "LLM" and expected in (hidden_size_vit, hidden_size_high_res)
                raise SinkTrainError(
                    f"sink profile {self.name!r} was made for a {label} width of {expected}, but this model's is "
                    f"{actual}" + ("; that is the width of this model's other vision branch: the profile's SigLIP and SAM "
                                   "facts are swapped (vit_dims, tau_v and hidden_size_vit describe SigLIP; high_res_dims, "
                                   "tau_high_res and hidden_size_high_res the SAM branch)" if swapped else "")
                    + f"; {FIND_DIMS_HINT}"
                )
        if self.hidden_size_llm is None:  # else __post_init__ checked it at this width
            check_rms_reach(self, hidden_size_llm)
        too_big = [d for d in self.vit_dims if d >= hidden_size_vit] + [d for d in self.llm_dims if d >= hidden_size_llm]
        too_big += [d for d in self.high_res_dims if hidden_size_high_res is not None and d >= hidden_size_high_res]
        if too_big:
            raise SinkTrainError(f"sink profile {self.name!r}: dims {too_big} exceed the model's hidden size; {FIND_DIMS_HINT}")


def check_l_sink_reach(source: str, tau_l: float | None, rms_norm: bool, width: int) -> None:
    """Refuse an RMS-normalised tau_L that no value can reach.

    After weightless RMSNorm a channel is at most sqrt(D): |h_d| / rms(h) <= sqrt(D), equality only
    when every other channel is 0; with k dims equally massive each is at most sqrt(D / k). So
    tau_L 50 after RMSNorm never fires on Qwen2-7B (sqrt(3584) = 59.9, sqrt(3584 / 2) = 42.3): the
    LSG paper's 50 for LLaVA-OneVision (Table S7) is a raw magnitude.
    """
    if tau_l is not None and rms_norm and tau_l >= math.sqrt(width):
        raise SinkTrainError(
            f"{source}: tau_l {tau_l:g} on RMS-normalised values can never fire, since after weightless RMSNorm no "
            f"channel of a {width}-wide hidden state exceeds sqrt({width}) = {math.sqrt(width):.1f}; read L-sinks raw "
            f"(\"llm_rms_norm\": false in the profile, --l_sink_values raw for find_sink_dims.py) or lower tau_l"
        )


def warn_l_sink_reach(source: str, tau_l: float | None, rms_norm: bool, width: int, num_dims: int) -> None:
    """Warn when an RMS-normalised tau_L fires only where one of several L-sink dims dominates."""
    if tau_l is not None and rms_norm and num_dims and tau_l > math.sqrt(width / num_dims):
        logger.warning(
            "%s: tau_l %g on RMS-normalised values is above sqrt(%d / %d) = %.1f, the most each of %d equally massive "
            "dims can reach after weightless RMSNorm, so it fires only where one dim dominates; if tau_l is a raw "
            "magnitude, read L-sinks raw (\"llm_rms_norm\": false)", source, tau_l, width, num_dims,
            math.sqrt(width / num_dims), num_dims,
        )


def check_rms_reach(profile: SinkProfile, width: int) -> None:
    if profile.llm_dims:
        source = f"sink profile {profile.name!r}"
        check_l_sink_reach(source, profile.tau_l, profile.llm_rms_norm, width)
        warn_l_sink_reach(source, profile.tau_l, profile.llm_rms_norm, width, len(profile.llm_dims))


def profile_from_dict(data: dict[str, Any], source: str = "profile") -> SinkProfile:
    known = {f.name for f in dataclasses.fields(SinkProfile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SinkTrainError(f"{source}: unknown keys {unknown}; the schema is documented in sinktrain/backbones/profiles.py")
    missing = sorted(f.name for f in dataclasses.fields(SinkProfile) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data)
    if missing:
        raise SinkTrainError(f"{source}: missing keys {missing}; the schema is documented in sinktrain/backbones/profiles.py")
    return SinkProfile(**data)


def load_profile(path: str | Path) -> SinkProfile:
    path = Path(path)
    if not path.is_file():
        raise SinkTrainError(f"sink profile {path} does not exist; {FIND_DIMS_HINT}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SinkTrainError(f"sink profile {path} is not valid JSON ({err}); rewrite it or regenerate it with tools/find_sink_dims.py") from err
    if not isinstance(data, dict):
        raise SinkTrainError(f"sink profile {path} must hold a JSON object")
    return profile_from_dict(data, source=f"sink profile {path}")


def save_profile(profile: SinkProfile, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(profile.to_json())
    tmp.replace(path)


# Published sink facts (LSG appendix Table S7, DIYSink, Sun et al. 2024). Vision towers are keyed
# by an identity derived from their config (see sinktrain.backbones.identity); LLM facts are keyed by LLM identity.
KNOWN_VISION_PROFILES: dict[str, dict[str, Any]] = {
    # CLIP ViT-L/14-336 as in LLaVA-1.5: dim 650 at the penultimate layer; tau_V 60 (LSG Table S7);
    # DIYSink's L2-norm rule: tau ~ 100, 3-5 sinks per image, most tokens below norm 60 (DIYSink Sec. 3).
    "clip-vit-l-14-336": dict(vit_dims=[650], vit_layer=-2, criterion="dim_threshold", tau_v=60.0, tau_l2=100.0, hidden_size_vit=1024),
    # SigLIP-SO400M as in LLaVA-OneVision: dim 1076, present from the first encoder layer; tau_V 40.
    "siglip-so400m-14-384": dict(vit_dims=[1076], vit_layer=-1, criterion="dim_threshold", tau_v=40.0, hidden_size_vit=1152),
}

# Every entry says how its tau_l reads L-sinks (llm_rms_norm): the same number means different
# things raw and after RMSNorm (check_l_sink_reach).
KNOWN_LLM_PROFILES: dict[str, dict[str, Any]] = {
    # LLaMA-2-7B / Vicuna-7B: 2533 primary, 1415; tau_L 20 after weightless RMSNorm (VAR's rule;
    # LSG Table S7, LLaVA-1.5 row "60 / 20").
    "llama-2-7b": dict(llm_dims=[2533, 1415], tau_l=20.0, llm_rms_norm=True, hidden_size_llm=4096),
    "llama-2-13b": dict(llm_dims=[2100, 4743], tau_l=20.0, llm_rms_norm=True, hidden_size_llm=5120),
    # Qwen2-7B: 458 primary, 2570; tau_L 50 on raw magnitudes (LSG Table S7, LLaVA-OV row "40 / 50";
    # the LSG paper applies its L-sink rule raw on this model, and 50 is out of RMSNorm's reach).
    "qwen2-7b": dict(llm_dims=[458, 2570], tau_l=50.0, llm_rms_norm=False, hidden_size_llm=3584),
}


def known_profile(vision_tower: str, llm: str | None) -> SinkProfile | None:
    """The built-in profile for a vision tower (plus LLM facts when known), or None."""
    vision = KNOWN_VISION_PROFILES.get(vision_tower)
    if vision is None:
        return None
    llm_facts = KNOWN_LLM_PROFILES.get(llm or "", {})
    name = vision_tower + (f"+{llm}" if llm_facts else "")
    return SinkProfile(name=name, vision_tower=vision_tower, **vision, **llm_facts)

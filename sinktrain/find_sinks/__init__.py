"""Discovering sink dimensions and thresholds on any backbone (what tools/find_sink_dims.py runs).

    python tools/find_sink_dims.py --model llava-hf/llava-1.5-7b-hf \\
        --data 'shards/{000000..000009}.tar' --num_images 300 --out profiles/llava-1.5-7b.json

The pieces, in the order a run uses them:

* ``probe``: load a backbone that has no sink profile yet;
* ``images``: the images (shards or a folder), split over ranks, and their prefill prompts;
* ``collect`` + ``capture``: one streaming pass with forward hooks, filling ``stats`` (fixed-size
  per layer and channel histograms on the log-magnitude ``bins``) and summing them over ranks;
* ``select`` + ``analyse``: sink dims (the massive-activation rule) and thresholds (widest empty
  gap), then token statistics;
* ``profile``: the SinkProfile every recipe reads; ``plots`` and ``report``: what the user sees.
"""

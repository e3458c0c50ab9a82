"""Circuits planted into the tiny demo models' random weights: position markers and steps.

A *marker* channel of a ViT's embeddings carries "sink propensity": the patch's mean brightness
plus a bias by position (high at a few candidate positions, low elsewhere). A *step* is two
neurons of a Linear-activation-Linear block that turn a marker into a clean on/off signal
(act(g m) - act(g m - 1): 0 below m = 0, ``height`` from m = 1/g on), so planted sinks are
bimodal like real ones and find_sink_dims sees a gap between sinks and ordinary tokens.
"""

from __future__ import annotations

from typing import Sequence

STEP_GAIN = 16384.0  # a step rises over 1/16384 of its marker's range: hardly a token lands on it
MARKER_BRIGHTNESS = 0.5  # against the position bias (normalised brightness spans about -2..2)
NON_CANDIDATE_MARKER = -2.0  # below every candidate, on any background


def plant_markers(embeddings, markers: Sequence[tuple[int, Sequence[int], Sequence[float]]]) -> None:
    """Each (channel, positions, biases): brightness plus a per-position bias in that channel of a
    SigLIP-style embedding (patch convolution with bias, no CLS position)."""
    pixels = embeddings.patch_embedding.weight[0].numel()
    for dim, positions, biases in markers:
        embeddings.patch_embedding.weight[dim] = MARKER_BRIGHTNESS / pixels
        embeddings.patch_embedding.bias[dim] = 0.0
        embeddings.position_embedding.weight[:, dim] = NON_CANDIDATE_MARKER
        for position, bias in zip(positions, biases):
            embeddings.position_embedding.weight[position, dim] = bias


def silence_channel(layers, dim: int) -> None:
    """No SigLIP block writes channel ``dim``: downstream reads what the embeddings put there."""
    for layer in layers:
        layer.self_attn.out_proj.weight[dim] = 0.0
        layer.self_attn.out_proj.bias[dim] = 0.0
        layer.mlp.fc2.weight[dim] = 0.0
        layer.mlp.fc2.bias[dim] = 0.0


def plant_step(first, second, neurons, read_dim: int, write_dim: int, height: float, threshold: float = 0.0, columns=None) -> None:
    """Two neurons of a Linear-activation-Linear block as a step: ``second`` writes height x
    (act(g (m - t)) - act(g (m - t) - 1)) into write_dim, m being ``first``'s input at read_dim:
    0 below m = t (``threshold``), ``height`` from m = t + 1/g on. ``columns``: where the neurons
    enter ``second`` (default: at their own index)."""
    for neuron, column, offset, sign in zip(neurons, columns or neurons, (0.0, -1.0), (1.0, -1.0)):
        first.weight[neuron] = 0.0
        first.weight[neuron, read_dim] = STEP_GAIN
        first.bias[neuron] = offset - STEP_GAIN * threshold
        second.weight[:, column] = 0.0
        second.weight[write_dim, column] = sign * height


def step_value(activation, fc1_out, neurons, height: float):
    """What a planted step writes, from its first layer's output (ground truth for tests)."""
    on, off = (activation(fc1_out[..., neuron]) for neuron in neurons)
    return height * (on - off)

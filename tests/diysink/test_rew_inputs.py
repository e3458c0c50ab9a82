"""What ReW's MLP reads: question embeddings standardised by the training questions' statistics
(sinktrain.modeling.rew.ReWeighter.standardize), taken from the first questions of the training
shards (sinktrain.diysink.rew.training_questions)."""

import torch

from sinktrain.data.shards import write_shards
from sinktrain.diysink.rew import training_questions
from sinktrain.modeling.rew import SPREAD_FLOOR, ReWeighter


def test_standardised_inputs_start_neutral_and_feed_the_mlp():
    torch.manual_seed(0)
    embeddings = torch.randn(12, 6) * 3 + 5
    embeddings[:, 2] = 7.0  # a feature every question shares: centred to 0, not divided by 0
    mlp = ReWeighter(6, hidden=8)
    mlp.standardize(embeddings)
    assert torch.equal(mlp(embeddings), torch.ones(12, 2))  # still exactly the plain DualMLP
    torch.nn.init.normal_(mlp.mlp[-1].weight)
    standardised = (embeddings - embeddings.mean(0)) / embeddings.std(0, unbiased=False).clamp(min=SPREAD_FLOOR)
    assert standardised[:, 2].abs().max() == 0 and torch.isfinite(mlp(embeddings)).all()
    torch.testing.assert_close(mlp(embeddings), 2 * torch.sigmoid(mlp.mlp(standardised)))
    assert set(mlp.state_dict()) >= {"center", "spread"}  # saved with the weights: inference reads the same way


def test_training_questions_are_the_first_turns_in_shard_order(tmp_path):
    records = [({"id": str(i), "conversations": [{"from": "human", "value": f"<image>\nQuestion {i}?"},
                                                 {"from": "gpt", "value": "yes"}]}, None, None) for i in range(7)]
    shards = write_shards(iter(records), str(tmp_path / "%06d.tar"), max_samples_per_shard=3)
    assert len(shards) == 3
    assert training_questions(shards, 100) == [f"Question {i}?" for i in range(7)]
    assert training_questions(shards, 4) == [f"Question {i}?" for i in range(4)]

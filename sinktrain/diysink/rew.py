"""DIYSink's ReW (soft selection, "To Sink or Not to Sink", Sec. 4.2) as sinktrain trains it: a
small MLP maps a frozen sentence encoder's embedding of the question to ``[w_sink, w_non]``, which
scale the two connectors' outputs, per sample (the model side: sinktrain.modeling.rew).

    rew = ReWeighting(backbone, SentenceEncoder(name))   # on a backbone with a DualMLP connector
    rew.set_questions(["How many objects?", ...])         # before each forward (one per batch row)

The weights are ``2 * sigmoid(z)``, so they stay positive and below 2, and the last layer starts at
zero: at initialisation both are exactly 1 and the model is the plain DualMLP. They scale each
sample's V-sink slots (``w_sink``) and other patch slots (``w_non``) where the LLM receives them,
which for a connector output placed as is equals scaling the connector's output. The MLP is a
submodule of the model (``model.rew``), so DeepSpeed trains, partitions and checkpoints it.
"""

from __future__ import annotations

import json
from collections import defaultdict

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.data.batch import Batch
from sinktrain.data.encode import first_question
from sinktrain.data.tar_samples import ReadStats, samples_from
from sinktrain.diysink.sentence import SentenceEncoder
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.modeling.rew import HIDDEN, ReWeighter, ReWeights
from sinktrain.train.zero import gathered, init_context

UNCATEGORISED = "(none)"
QUESTIONS_KEPT = 256
STANDARDIZE_SAMPLES = 4096  # training questions the MLP's input statistics are taken from (ReW sets: 120-240)


class WeightTally:
    """The weights per category since the last log (TensorBoard), and the questions seen per
    category (up to QUESTIONS_KEPT each), which the final weights are reported on."""

    def __init__(self):
        self.recent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        self.questions: dict[str, set[str]] = defaultdict(set)
        self.overall: dict[str, float] = {}

    def add(self, weights: torch.Tensor, categories: list, questions: list[str]) -> None:
        for (w_sink, w_non), category, question in zip(weights.tolist(), categories, questions):
            name = UNCATEGORISED if category is None else str(category)
            sums = self.recent[name]
            sums[0], sums[1], sums[2] = sums[0] + w_sink, sums[1] + w_non, sums[2] + 1
            if len(self.questions[name]) < QUESTIONS_KEPT:
                self.questions[name].add(question)

    def metrics(self) -> dict:
        """Mean weights over the steps since the last call: overall (progress line) and per category (TensorBoard)."""
        out, totals = {}, [0.0, 0.0, 0]
        for name, (w_sink, w_non, count) in sorted(self.recent.items()):
            out[f"rew/w_sink/{name}"], out[f"rew/w_non/{name}"] = w_sink / count, w_non / count
            totals = [totals[0] + w_sink, totals[1] + w_non, totals[2] + count]
        self.recent.clear()
        self.overall = {"rew/w_sink": totals[0] / max(totals[2], 1), "rew/w_non": totals[1] / max(totals[2], 1)}
        return out


class ReWeighting(ReWeights):
    """ReW as sinktrain trains it: the MLP born partitioned under ZeRO-3 and starting neutral, the
    weights tallied per question category, the training loss."""

    def __init__(self, backbone: Backbone, encoder: SentenceEncoder, hidden: int = HIDDEN):
        if not isinstance(backbone.connector, DualMLPConnector):
            raise SinkTrainError("ReW reweights a DualMLP connector's two outputs; attach one first (attach_dual_mlp)")
        with init_context():  # born partitioned under ZeRO-3, like every trained module
            module = ReWeighter(encoder.width, hidden)
        last = module.mlp[-1]
        with gathered(list(last.parameters()), modifier_rank=0):  # zero.Init partitioned it as it was built
            module.start_neutral()
        super().__init__(backbone, encoder, module)
        self.tally = WeightTally()

    @property
    def backbone(self) -> Backbone:
        return self.slotted

    def standardize_on(self, shards: list[str]) -> None:
        """Set the MLP's input statistics from the first questions of the training shards (the same on
        every rank, and again on resume)."""
        questions = training_questions(shards, STANDARDIZE_SAMPLES)
        if len(questions) < 2:
            raise SinkTrainError(f"{shards[0]} ...: ReW needs at least 2 readable LLaVA records with a question to train on, found {len(questions)}")
        embeddings = torch.cat([self.encoder.embed(questions[start:start + 256]) for start in range(0, len(questions), 256)])
        self.module.standardize(embeddings.to(self.module.center.device))

    def weights_by_category(self, state: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """Mean final weights over each category's questions, from a full copy of the MLP's weights."""
        mlp = ReWeighter(self.encoder.width, self.module.mlp[0].out_features)
        mlp.load_state_dict(state)
        report = {}
        with torch.no_grad():
            for name, questions in sorted(self.tally.questions.items()):
                weights = mlp(self.encoder.embed(sorted(questions)).cpu()).mean(dim=0)
                report[name] = {"w_sink": round(weights[0].item(), 4), "w_non": round(weights[1].item(), 4), "questions": len(questions)}
        return report

    def loss(self, batch: Batch) -> torch.Tensor:
        weights = self.set_questions(batch.questions)
        self.tally.add(weights.detach().float().cpu(), batch.categories, batch.questions)
        return self.backbone.forward(batch).loss


def training_questions(shards: list[str], limit: int) -> list[str]:
    """The first human turn of up to ``limit`` samples, in shard order (read as training reads shards)."""
    questions: list[str] = []
    for url in shards:
        for raw in samples_from(url, 0, ReadStats()):
            try:
                questions.append(first_question(json.loads(raw["json"])["conversations"]))
            except (KeyError, TypeError, ValueError):
                continue  # a broken sample: training skips it too
            if len(questions) == limit:
                return questions
    return questions

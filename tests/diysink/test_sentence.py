"""ReW's sentence encoder (sinktrain.diysink.sentence): mean pooling over real tokens only, and an
encoder without its tokenizer refused with the fix."""

import shutil

import pytest
import torch

from sinktrain import demo
from sinktrain.diysink.sentence import SentenceEncoder
from sinktrain.errors import SinkTrainError


def test_padding_does_not_change_an_embedding():
    encoder = SentenceEncoder(str(demo.ensure_demo_sentence_encoder()))
    short, long = "What colour?", "How many objects are in the image?"
    together = encoder.embed([short, long])
    torch.testing.assert_close(together[0], encoder.embed([short])[0], rtol=1e-5, atol=1e-6)
    assert together.shape == (2, encoder.width) and not torch.allclose(together[0], together[1])


def test_an_encoder_without_its_tokenizer_is_refused(tmp_path):
    source = demo.ensure_demo_sentence_encoder()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, tmp_path / name)
    with pytest.raises(SinkTrainError, match=r"--sentence_encoder .*: no tokenizer could be loaded .*holds its tokenizer files"):
        SentenceEncoder(str(tmp_path))

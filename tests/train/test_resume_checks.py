"""What a resumed or requeued run must share with its checkpoint (sinktrain.train.resume_checks):
the data and the global batch are refused with both values named; another number of ranks gets
the gradient accumulation that keeps the global batch."""

import json

import pytest

from sinktrain.errors import SinkTrainError
from sinktrain.train.ds_settings import RunSettings
from sinktrain.train.resume_checks import check_resumable, data_identity, ranks_and_accumulation, run_lanes

DATA = data_identity("shards/{0..1}.tar", ["shards/0.tar", "shards/1.tar"], [100, 80])


def checkpoint(tmp_path, world_size=2, global_batch=16, data=DATA):
    tag = tmp_path / "checkpoints" / "step_000010"
    tag.mkdir(parents=True)
    state = {"step": 10, "world_size": world_size, "global_batch": global_batch, "data": data}
    (tag / "trainer_state.json").write_text(json.dumps(state))
    return state, tag


def settings(per_device=8, accum=1):
    return RunSettings(per_device, accum, 1e-3, 0.0, 0.0, 100, 1.0, "fp32", "out")


def test_the_same_data_elsewhere_resumes_other_data_or_batch_is_refused(tmp_path):
    resume = checkpoint(tmp_path)
    check_resumable(*resume, 16, data_identity("/local/{0..1}.tar", ["/local/0.tar", "/local/1.tar"], [100, 80]))
    with pytest.raises(SinkTrainError) as other:
        check_resumable(*resume, 16, data_identity("new/{0..1}.tar", ["new/0.tar", "new/1.tar"], [100, 81]))
    assert "'shards/{0..1}.tar' (2 shards, 180 samples)" in str(other.value)
    assert "'new/{0..1}.tar' (2 shards, 181 samples)" in str(other.value) and "checkpoint's --data" in str(other.value)
    with pytest.raises(SinkTrainError, match="global batch of 16 samples, this run's is 32"):
        check_resumable(*resume, 32, DATA)


def test_another_number_of_ranks_keeps_the_global_batch(tmp_path):
    resume = checkpoint(tmp_path, world_size=2, global_batch=16)
    assert ranks_and_accumulation(*resume, 2, settings(8, 1)) == (2, 1)
    assert ranks_and_accumulation(*resume, 1, settings(8, 1)) == (2, 2)
    assert ranks_and_accumulation(*resume, 4, settings(4, 3)) == (2, 1)
    with pytest.raises(SinkTrainError, match="3 ranks x --per_device_batch_size 8 cannot make 16.*divides 2"):
        ranks_and_accumulation(*resume, 3, settings(8, 1))
    assert ranks_and_accumulation(*resume, 1, settings(8, 2), typed=True) == (2, 2)
    with pytest.raises(SinkTrainError, match="--grad_accum 3: .* on 1 ranks that needs --grad_accum 2"):
        ranks_and_accumulation(*resume, 1, settings(8, 3), typed=True)


def test_a_resumed_run_keeps_its_checkpoints_lanes():
    saved = {"stream": {"lanes": 2}}
    assert run_lanes(saved, None, world_size=2, num_workers=2) == 2  # not 4: the order was cut in 2
    assert run_lanes(None, None, world_size=2, num_workers=2) == 4  # new: one per reader
    assert run_lanes(None, 6, world_size=2, num_workers=2) == 6

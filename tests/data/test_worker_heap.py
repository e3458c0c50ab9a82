"""A shard stream's DataLoader workers keep freed memory in their heap (sinktrain/allocator.py), so
the memory a worker frees in a burst (a shuffle window of raw samples, a batch of image arrays) is
reused, not page-faulted in again; a plain map-style loader's workers, with glibc's defaults, fault
it back in. Run in a fresh Python: a process that already changed its allocator would hand its
setting to the workers it forks.

    python -m pytest tests/data/test_worker_heap.py -q
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_helpers import write_sized

ROOT = Path(__file__).resolve().parents[2]
BLOCK_PAGES = 12288  # 48 MiB: above the 32 MiB glibc lets its adaptive mmap threshold reach

WORKERS_FAULTS = r"""
import json, resource, sys
from torch.utils.data import DataLoader, Dataset
from sinktrain.data.stream import ShardStream

BLOCK = int(sys.argv[1]) * 4096

def refaults(_):
    block = bytearray(BLOCK)  # touched (zeroed), then freed
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(BLOCK)
    return {"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}

class MapStyle(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return refaults(index)

shards, sizes = sys.argv[2:4], [int(size) for size in sys.argv[4:6]]
stream = ShardStream(shards, refaults, 0, 1, 1, sizes=sizes)
faults = {kind: next(iter(DataLoader(data, batch_size=None, num_workers=1)))["faults"]
          for kind, data in (("stream", stream), ("map", MapStyle()))}
print(json.dumps(faults))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux")
def test_stream_workers_reuse_freed_memory_where_default_workers_fault_it_back(tmp_path):
    shards, _ = write_sized(tmp_path, [3, 3])
    done = subprocess.run([sys.executable, "-c", WORKERS_FAULTS, str(BLOCK_PAGES), *shards, "3", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    faults = json.loads(done.stdout.strip().splitlines()[-1])
    assert faults["map"] >= 0.9 * BLOCK_PAGES  # glibc's default: the freed block went back to the OS
    assert faults["stream"] < 0.05 * BLOCK_PAGES  # kept in the heap and reused

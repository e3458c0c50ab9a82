"""The real two-node Slurm cluster (tests/slurm_cluster.py), started once for every Slurm test."""

import pytest

from slurm_cluster import SlurmCluster, skip_unless_slurm


@pytest.fixture(scope="session")
def cluster():
    skip_unless_slurm()
    with SlurmCluster() as running:
        yield running

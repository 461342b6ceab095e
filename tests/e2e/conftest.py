"""The local stack of the end-to-end tests: a fresh one for each module, as `make up` starts it (a
shorter failover, so that the simulator's switches take 0.4 s instead of 1.5 s)."""

from __future__ import annotations

import pytest

from devcluster.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, cluster):  # the session's control plane: its binaries are built
    with Stack(
        tmp_path_factory.mktemp("stack"), cluster.bin, fixed_ports=False, sim_args=("--failover-ms", "400")
    ) as s:
        yield s

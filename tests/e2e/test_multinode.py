"""A Ray cluster of several nodes on one machine (ray.cluster_utils.Cluster: a head that
runs no tasks and worker nodes of one CPU each, every node its own raylet and object store).

The driver connects to it as it would to a SLURM-started cluster (``ray.address``). Tasks
must spread over the nodes, and killing one worker node in the middle of the run (while it
runs an image task) must still end with every product published exactly once.
"""

import shutil

import pytest
import ray
from ray.cluster_utils import Cluster

from engine import config, scheduler, simulate
from engine.faults import VAR as FAULTS
from tests.conftest import assert_published_once, strike_running_task

GB = 1024 ** 3


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "memory": 2 * GB, "object_store_memory": 200 * 1024 ** 2,
        "include_dashboard": True})
    nodes = [c.add_node(num_cpus=1, memory=3 * GB, object_store_memory=200 * 1024 ** 2)
             for _ in range(3)]
    c.wait_for_nodes()
    yield c, nodes
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def test_tasks_spread_and_a_killed_node_loses_nothing(cluster, tmp_path, monkeypatch):
    c, nodes = cluster
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        "sim.nobs": 3, "image.max_imsize": 256, "image.niter": 50,
        "ray.address": c.address, "ray.max_obs_in_flight": 3})
    paths, _, _ = simulate.simulate_run(cfg, tmp_path / "scratch")
    (tmp_path / "incoming").mkdir()
    for obs in paths:
        for p in obs:
            shutil.copy(p, tmp_path / "incoming")
    monkeypatch.setenv(FAULTS, "image.start@*=sleep:5")  # a window to kill a node in
    by_id = {n.node_id: n for n in nodes}
    th, killed = strike_running_task(
        lambda t: t.name.startswith("image[") and t.node_id in by_id,
        lambda t: c.remove_node(by_id[t.node_id], allow_graceful=False))
    summary = scheduler.run(cfg, tmp_path)
    th.join()
    assert killed, "no image task was seen running"
    from ray.util.state import list_tasks

    done = list_tasks(filters=[("state", "=", "FINISHED")], limit=1000,
                      raise_on_missing_output=False)
    converted_on = {t.node_id for t in done if t.name.startswith("convert[")}
    assert len(converted_on) >= 2, "subband tasks did not spread over the nodes"
    assert all(n in by_id for n in converted_on)  # the head (0 CPUs) ran none
    assert not summary.failed, summary.failed
    assert len(summary.imaged) == 3
    assert_published_once(tmp_path, 3)
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 3  # head + the two surviving workers

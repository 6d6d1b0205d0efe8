"""A short GPS training on a local two-node Ray cluster (ray.cluster_utils.Cluster, this machine
only): one node is killed in the middle of an iteration's sampling, its samples are run again on
the node left, and the run ends with the same policy and figures as a clean in-process run."""
import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="the [ray] extra (make install installs it)")

from s2r.core.executor import RayExecutor  # noqa: E402
from s2r.learning.agents import ArmReachAgent  # noqa: E402
from s2r.learning.gps import MDGPS, GPSConfig  # noqa: E402


def _train(executor=None):
    agent = ArmReachAgent(n_conditions=2, T=15)
    try:
        gps = MDGPS(agent, GPSConfig(samples_per_condition=3, eval_episodes=2, policy_steps=30, seed=5))
        gps.executor = executor
        history = [gps.iterate() for _ in range(2)]
        return history, gps.policy.state_dict(), gps.reruns
    finally:
        agent.close()


def test_gps_on_a_cluster_survives_a_lost_node():
    from ray.cluster_utils import Cluster
    clean, clean_params, _ = _train()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker_node = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="ERROR")
    ex = None
    try:
        ex = RayExecutor(2)
        nodes = {node for _, node in ex.actor_locations()}
        assert worker_node.node_id in nodes and len(nodes) == 2        # one actor per node
        lost = []

        def kill_the_worker_node(label, done, total):
            if not lost and label.startswith("GPS iteration 2: sampling") and done == 2:
                cluster.remove_node(worker_node, allow_graceful=False)
                lost.append(label)
        ex.on_job_done = kill_the_worker_node
        history, params, reruns = _train(ex)
    finally:
        if ex is not None:
            ex.close()
        ray.shutdown()
        cluster.shutdown()
    assert lost and reruns >= 1 and history[1]["reruns"] == reruns        # samples were run again ...
    for a, b in zip(clean, history):                                      # ... and nothing else changed
        for k in ("cost", "success", "eval_distance", "kl", "policy_loss", "rollouts", "dropped"):
            assert a[k] == b[k], k
    assert all(torch.equal(clean_params[k], params[k]) for k in clean_params)
    assert np.isfinite(history[-1]["cost"])

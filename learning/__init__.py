"""Learning (torch): guided policy search and imitation for the s2r tasks.

    linear_gaussian   linear-Gaussian controllers/dynamics, trajectory KL, expected cost
    dynamics          GMM prior (<= 20 clusters, NIW) + per-step linear-Gaussian dynamics fit
    lqr_flm           KL-constrained LQR with dual search over eta, step-size adjustment
    gps               mirror-descent GPS (on/off-policy), precision-weighted S-step
    policies          MLP, visuomotor CNN (spatial softmax), TorchScript export
    plato             PLATO / DAgger with an MPC teacher from controllers/
    agents            sample sources: point mass, s2r/ArmReach-v0 (input remapping)
    insert_agent      s2r/ArmInsert-v0 (state-based)
    features          every policy input, defined once (training, `s2r eval`, policy_node)
    registry          the tasks by name (`make_agent`), `state_vector` and `scene_kwargs`
    train, cli        checkpoints/resume/plots; `s2r train gps|plato`, `s2r eval`

Policies share `forward(...)` on torch tensors; agents call them through `gps.PolicyRunner` on an
observation dict. Every exported policy (`policy.pt2`, `policy.onnx`; learning/export.py) carries its
input/output contract as the metadata `s2r_policy.json`.
"""

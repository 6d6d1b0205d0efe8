"""Guided policy search on arm reach and then arm insert, against a model-free baseline trained
in the same run.

Task: s2r/ArmReach-v0 (Panda, position control, 100 steps at 100 Hz). Training: 4 conditions
x 5 samples per iteration, at most 10 MDGPS iterations (200 rollouts). Success: TCP within 5 cm of
the target at the end of an episode, on 20 held-out episodes, evaluated after every iteration
with the global policy's mean action (these evaluation rollouts are not counted as training
rollouts, for either method).

Protocol ("held-out start states"): a condition is an episode seed of the task; the task draws
the start posture (home +- 0.05 rad per joint) and the target (uniform in x [0.35, 0.65],
y [-0.25, 0.25], z [table + 0.1, table + 0.45] m) from it. Training conditions and held-out
episodes come from this same distribution; the held-out episodes are seeds 10000-10019, which no
training condition ever uses (training seeds are drawn outside [10000, 20000)). The 4 training
conditions are drawn anew every iteration (RESAMPLE: on-policy MDGPS needs no per-condition
state across iterations; see learning/gps.py), so 10 iterations see up to 40 start states; the
budget is unchanged (4 x 5 rollouts per iteration). The PPO baseline draws new conditions every
update the same way. GPS's first local controllers are a PD law on the TCP's error through the
start posture's Jacobian (ArmReachAgent.initial_controllers), with exploration noise.

  state   MLP on [joint_pos, joint_vel, target - tcp_pos]
  image   visuomotor CNN on the 128x128 camera image (learning/experiments/reach_visuomotor.yaml, the recipe
          this row runs; at 64x64 the pretrained
          features place the target to ~2.9 cm, at 128x128 to ~1.3 cm) + [joint_pos, joint_vel, tcp_pos (forward
          kinematics)] (vision layers pretrained on pose regression of [target, tcp] from 8000
          rendered images -- half with the arm at its start posture after a few random actions, half
          placed by inverse kinematics on the way to the target -- 6000 Adam steps with bf16
          convolutions, cosine learning rate; rendered
          images are not rollouts and are not counted. KL step 1.0 (the state run: 0.5). The conv layers then stay frozen; the S-step
          (800 Adam steps, on this and the 9 earlier iterations' samples: policy_replay) trains
          the layers after the feature points, with an auxiliary loss (pre-fit for 2000 steps): the FC head's first
          hidden layer regresses tcp - target on the rendered images and the samples
          (learning.gps.AuxPose); the CNN's inputs stay the image and the joint state). The
          task's 1.5 cm target marker is about one pixel at 64x64: the image agent shows the
          target as an opaque green 3.5 cm sphere (ArmReachAgent.VISIBLE_MARKER_RADIUS) on a
          visual-only stand from the table (ArmReach target_stand), whose foot tells the one
          camera how far away the target is
  baseline  PPO (learning/ppo.py: clipped surrogate, GAE, a Gaussian policy whose mean is the same
          state MLP) on the same cost (reward = -cost), 4 conditions x 5 rollouts per update, the
          mean policy evaluated on the same held-out starts every 5 updates (100 rollouts), up to
          6000 rollouts; reported as rollouts to reach the same success (or the budget, if not)
  sb3     a second, independently written model-free baseline: stable-baselines3 PPO (its defaults:
          MlpPolicy 64x64 tanh, 10 epochs, lr 3e-4, GAE 0.99/0.95, clip 0.2), with updates of 2000
          steps (20 episodes, as learning/ppo.py's) in minibatches of 100, VecNormalize (observations
          and rewards), 1 torch thread; the same observation ([joint_pos, joint_vel, target -
          tcp_pos]) and reward (minus the agent's cost, the final cost on the last step), training
          episodes from seeds outside the held-out range, the deterministic policy on the same 20
          held-out starts every 100 rollouts, up to --sb3-budget rollouts (default 6000); reported
          as rollouts to 90 % like PPO's (sb3_* keys; --skip-sb3 leaves it out, --sb3-only runs it
          alone and merges it into --json)
  CNN inference: batch 1, torch.set_num_threads(2), the exported TorchScript (as the ROS policy node
          loads it) frozen, channels-last, 64x64 and 240x240 (best of 3 medians of 100 calls); fp32,
          and with bf16 convolutions (export_torchscript precision="bf16": cnn_ms_64 / cnn_ms_240).
          The trained image policy is evaluated exported in both precisions on the held-out episodes
  export  the same CNN (fp32, random weights) exported three ways and run as policy_node runs it
          (learning.deploy.load_policy, batch 1, 2 threads, numpy in and out): TorchScript (.pt, while
          kept), torch.export (.pt2) and ONNX Runtime (.onnx), at 64, 128 and 240 px, timed in
          interleaved rounds (best of 3 medians of 100 calls each): torchscript_ms_N, pt2_ms_N,
          onnx_ms_N; each format's largest action difference from the torch module on 8 images
          (*_max_action_diff), checked against EXPORT_TOLERANCE (export_actions_agree)
  insert  s2r/ArmInsert-v0 (the square peg into the shape sorter, 200 steps), state-based MDGPS with
          the same protocol (4 new conditions x 5 samples, 20 held-out starts, seeds 10000-10019;
          success: the task's own, the peg's bottom more than 1.5 cm down the matching hole) and
          learning/experiments/insert_state.yaml; the first local controllers line the peg up over the hole and
          then lower it (ArmInsertAgent.initial_controllers), the cost's target follows the same
          plan, and the policy sees the episode's phase. insert_* keys; --insert-only runs it alone
  final   the last GPS policy of each run also on 100 further held-out starts (seeds 10100-10199,
          used for nothing else), with a Wilson 95 % interval (state_/image_final_success_rate,
          ..._final_success_ci95): the 20-episode number moves by 5-10 % with floating-point noise
          alone (1 vs 2 torch threads)

    python benchmarks/bench_gps.py --json OUT [--quick] [--skip-image] [--skip-insert] [--cnn-only] [--insert-only]
                                   [--skip-sb3 | --sb3-only] [--sb3-budget N]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # the 2-core target machine
    os.environ.setdefault(_v, "2")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2r.learning.agents import ArmReachAgent  # noqa: E402
from s2r.learning.experiment import build_experiment, load_experiment  # noqa: E402
from s2r.learning.policies import VisuomotorCNN, export_torchscript  # noqa: E402
from s2r.learning.ppo import PPO, PPOConfig  # noqa: E402
from s2r.learning.train import stage_progress, wilson_interval  # noqa: E402

# the recipes the GPS rows run (learning/experiments/; their results: RESULTS.md there)
EXPERIMENTS = {"state": "reach_state", "image": "reach_visuomotor", "insert": "insert_state"}
VISUOMOTOR_IMAGE_SIZE = load_experiment(EXPERIMENTS["image"]).image_size
TARGET = 0.9
REACH_SUCCESS_M = 0.05     # this benchmark's ArmReach success: the TCP within 5 cm (the task's own is 2 cm)
BASELINE_BUDGET = 6000  # PPO rollouts (30x the GPS budget)
FINAL_EVAL = 100     # further held-out starts the final GPS policies are evaluated on: seeds 10100-10199,
FINAL_EVAL_FIRST = 100   # never used for training nor for choosing settings (learning.gps: 10020-10059)
RESAMPLE = True      # training conditions drawn anew every iteration (GPS) / update (PPO)


def exported(policy, precision: str, scale) -> torch.jit.ScriptModule:
    """The policy as the ROS policy node runs it: exported TorchScript, loaded, frozen, optimized."""
    data = export_torchscript(policy, None, {}, scale, precision=precision)
    return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(io.BytesIO(data)).eval()))


def cnn_latency_ms(size: int, precision: str = "fp32", repeats: int = 3, calls: int = 100) -> float:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = VisuomotorCNN(17, 7, size).eval()
    mod = exported(net, precision, np.ones(7))
    img = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    js = torch.zeros(1, 17)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(10):
            mod(img, js)
        for _ in range(repeats):
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                mod(img, js)
                ts.append(time.perf_counter() - t0)
            best = min(best, float(np.median(ts)))
    return 1000 * best


EXPORT_SIZES = (64, 128, 240)
EXPORT_TOLERANCE = 1e-4      # fp32 actions of every export vs the torch module


def export_latency(log, sizes=EXPORT_SIZES, repeats: int = 3, calls: int = 100) -> dict:
    """The export rows (module docstring): per size, one CNN written as .pt, .pt2 and .onnx, loaded
    by learning.deploy.load_policy (2 threads), checked against the torch module and timed."""
    import tempfile

    from s2r.learning.deploy import load_policy
    from s2r.learning.export import export_policies
    res, diffs = {}, {"torchscript": 0.0, "pt2": 0.0, "onnx": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            torch.manual_seed(0)
            net = VisuomotorCNN(17, 7, size).eval()
            meta = {"inputs": ["image", "joint_state"], "image_size": [size, size]}
            paths = export_policies(net, Path(tmp) / f"cnn{size}", meta, np.ones(7),
                                    formats=("torchscript", "pt2", "onnx"))
            policies = {fmt: load_policy(p, threads=2)[0] for fmt, p in zip(("torchscript", "pt2", "onnx"), paths)}
            rng = np.random.default_rng(size)
            imgs = rng.random((8, 3, size, size), dtype=np.float32)
            js = rng.normal(size=(8, 17)).astype(np.float32)
            with torch.inference_mode():
                want = torch.clamp(net(torch.from_numpy(imgs), torch.from_numpy(js)), -1, 1).numpy()
            for fmt, pol in policies.items():
                got = np.concatenate([pol(imgs[i:i + 1], js[i:i + 1]) for i in range(8)])
                diffs[fmt] = max(diffs[fmt], float(np.abs(got - want).max()))
            img, j = imgs[:1], js[:1]
            for pol in policies.values():
                for _ in range(10):
                    pol(img, j)
            best = {fmt: float("inf") for fmt in policies}
            for _ in range(repeats):          # interleaved: a busy moment on a shared machine hits every format
                for fmt, pol in policies.items():
                    ts = []
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        pol(img, j)
                        ts.append(time.perf_counter() - t0)
                    best[fmt] = min(best[fmt], float(np.median(ts)))
            for fmt, t in best.items():
                res[f"{fmt}_ms_{size}"] = 1000 * t
            log(f"  {size}x{size}: TorchScript {res[f'torchscript_ms_{size}']:.3f} ms, "
                f".pt2 {res[f'pt2_ms_{size}']:.3f} ms, ONNX Runtime {res[f'onnx_ms_{size}']:.3f} ms")
    res.update({f"{fmt}_max_action_diff": d for fmt, d in diffs.items()})
    res["export_action_tolerance"] = EXPORT_TOLERANCE
    res["export_actions_agree"] = all(d <= EXPORT_TOLERANCE for d in diffs.values())
    res["export_note"] = ("fp32 CNN, batch 1, 2 threads, through learning.deploy.load_policy (numpy in and out), "
                          "as policy_node calls it")
    log(f"  largest action difference from the torch module: TorchScript {diffs['torchscript']:.2e}, "
        f".pt2 {diffs['pt2']:.2e}, ONNX {diffs['onnx']:.2e} "
        f"({'within' if res['export_actions_agree'] else 'NOT within'} {EXPORT_TOLERANCE:g})")
    return res


def run_gps(kind: str, iterations: int, log) -> dict:
    """kind: "state" or "image" (ArmReach), "insert" (ArmInsert, state-based): the experiment
    EXPERIMENTS[kind], with this benchmark's iterations and protocol."""
    images = kind == "image"
    full = iterations > 3
    overrides = [f"iterations={iterations}", "eval_episodes=20", f"fixed_conditions={str(not RESAMPLE).lower()}"]
    if kind != "insert":
        overrides.append(f"agent.success_distance={REACH_SUCCESS_M}")
    if images and not full:
        overrides += ["gps.pretrain_images=60", "gps.pretrain_steps=30", "gps.aux_pretrain_steps=0"]
    agent, gps, _, _ = build_experiment(load_experiment(EXPERIMENTS[kind], overrides))
    reached, t0 = None, time.perf_counter()
    if images:       # rendering and pretraining take most of the image run: show their progress
        gps.pretrain(stage_progress(sys.stdout))
    for _ in range(iterations):
        s = gps.iterate()
        log(f"  {kind} GPS it {s['iteration']}: cost {s['cost']:.2f} held-out success "
            f"{100 * s['success']:.0f}% (distance {s['eval_distance']:.3f} m) {s['seconds']:.0f} s"
            + (f", aux pose error {100 * s['aux_pose_error']:.1f} cm" if s.get("aux_pose_error") is not None else ""))
        if s["success"] >= TARGET:
            reached = s["iteration"]
            break
    # the final policy on 100 further held-out starts: 20 episodes only resolve success to about
    # +-10 %, so this says how far the stopping iteration's number is from luck
    n_final = FINAL_EVAL if full else 20
    ev = gps.evaluate(n_final, first=FINAL_EVAL_FIRST)
    k = round(ev["success_rate"] * n_final)
    out = {"final_success_rate": ev["success_rate"], "final_success_ci95": list(wilson_interval(k, n_final)),
           "final_distance": ev["final_distance"],
           "final_eval_seeds": [10_000 + FINAL_EVAL_FIRST, 10_000 + FINAL_EVAL_FIRST + n_final - 1]}
    log(f"  final policy on {n_final} held-out starts: success {100 * ev['success_rate']:.0f}% "
        f"(95 % CI {100 * out['final_success_ci95'][0]:.0f}-{100 * out['final_success_ci95'][1]:.0f} %), "
        f"distance {ev['final_distance']:.3f} m")
    if images:       # the trained CNN exported in fp32 and bf16, on the same held-out episodes
        scale = agent.action_scale
        for precision in ("fp32", "bf16"):
            mod = exported(gps.policy, precision, scale)

            def act(t, x, o, m=mod):
                with torch.inference_mode():
                    u = m(torch.from_numpy(o["image"])[None], torch.from_numpy(o["state"])[None].float())
                return u[0].double().numpy() / scale
            res = [agent.held_out(i, act) for i in range(20)]
            out[f"exported_{precision}_success_rate"] = float(np.mean([r.success for r in res]))
            log(f"  exported {precision}: held-out success {100 * out[f'exported_{precision}_success_rate']:.0f}%")
    agent.close()
    h = gps.history
    return {"success_rate": h[-1]["success"], "iterations": reached, "rollouts": sum(x["rollouts"] for x in h),
            "history": h, "seconds": time.perf_counter() - t0, **out}


def run_ppo_baseline(budget: int, log, eval_every: int = 5) -> dict:
    """PPO (learning/ppo.py) on the state MLP's features, 4 conditions x 5 rollouts per update, new
    conditions every update; the mean policy evaluated on the held-out starts every `eval_every` updates."""
    torch.set_num_threads(2)
    agent = ArmReachAgent(success_distance=REACH_SUCCESS_M)
    ppo = PPO(agent, PPOConfig(resample_conditions=RESAMPLE))
    per_update = agent.n_conditions * ppo.cfg.samples_per_condition
    reached, history, t0 = None, [], time.perf_counter()
    while ppo.rollouts + per_update <= budget:
        s = ppo.iterate()
        if s["iteration"] % eval_every and ppo.rollouts + per_update <= budget:
            continue
        ev = ppo.evaluate(20)
        history.append({"rollouts": ppo.rollouts, "success": ev["success_rate"], "distance": ev["final_distance"],
                        "return": s["return"]})
        log(f"  PPO baseline: {ppo.rollouts} rollouts, held-out success {100 * ev['success_rate']:.0f}% "
            f"(distance {ev['final_distance']:.3f} m), return {s['return']:.2f}")
        if ev["success_rate"] >= TARGET:
            reached = ppo.rollouts
            break
    agent.close()
    return {"rollouts_to_success": reached, "rollouts_used": ppo.rollouts, "success_rate": history[-1]["success"],
            "history": history, "seconds": time.perf_counter() - t0}


def _reach_gym_env(agent: ArmReachAgent):
    """ArmReach as the agent sees it, as a Gymnasium env for stable-baselines3: observation = the
    agent's state MLP input, reward = minus the agent's cost, one episode = one rollout of agent.T
    steps from a seed outside the held-out range."""
    import gymnasium as gym

    from s2r.learning.features import sim_context

    class AgentEnv(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self):
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (agent.obs_dim,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (agent.dU,), np.float32)
            self.rollouts = 0

        def _observe(self, obs):
            self.x = agent.state(obs)
            return agent.inputs.observe(sim_context(obs, agent.env)).astype(np.float32)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            while True:
                s = int(self.np_random.integers(0, 2**31 - 1))
                if not agent.HELD_OUT_BASE <= s < agent.HELD_OUT_BASE + agent.HELD_OUT_SEEDS:
                    break
            obs, _ = agent.env.reset(seed=s)
            self.episode_seed = s
            agent.inputs.reset()
            self.t = 0
            return self._observe(obs), {}

        def _cost(self, t, x, u=None):
            c = agent.cost
            e = x - c.x_target[t]
            return 0.5 * e @ c.Q[t] @ e + (0.5 * u @ c.R[t] @ u if u is not None else 0.0)

        def step(self, action):
            u = np.clip(np.asarray(action, float), -1.0, 1.0)
            cost = self._cost(self.t, self.x, u)
            agent.inputs.record_action(u * agent.action_scale)
            obs, _, _, _, info = agent.env.step(u)
            self.t += 1
            o = self._observe(obs)
            done = self.t >= agent.T          # the benchmark's fixed horizon: the final cost ends it
            if done:
                cost += self._cost(agent.T, self.x)
                self.rollouts += 1
            return o, -float(cost), done, False, {}

    return AgentEnv()


def run_sb3_baseline(budget: int, log, eval_every: int = 100) -> dict:
    """stable-baselines3 PPO on the same observation, reward and protocol as run_ppo_baseline; the
    deterministic policy on the held-out starts every `eval_every` rollouts."""
    try:
        from stable_baselines3 import PPO as SB3PPO
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    except ImportError:
        raise SystemExit("bench_gps: the SB3 row needs stable-baselines3 (pip install -e '.[dev]'), "
                         "or --skip-sb3") from None
    import stable_baselines3
    torch.set_num_threads(1)          # 64x64 MLP: a second thread's hand-offs cost more than they save
    # separate worlds: evaluation never cuts an episode
    train_agent, eval_agent = (ArmReachAgent(success_distance=REACH_SUCCESS_M) for _ in range(2))
    T = train_agent.T
    env = _reach_gym_env(train_agent)
    venv = VecNormalize(DummyVecEnv([lambda: env]), gamma=0.99)
    venv.seed(0)
    per_update = 20                   # episodes per update, as learning/ppo.py's 4 conditions x 5
    model = SB3PPO("MlpPolicy", venv, n_steps=per_update * T, batch_size=100, seed=0, device="cpu", verbose=0)
    reached, history, t0 = None, [], time.perf_counter()
    chunk = max(per_update, eval_every // per_update * per_update)
    while env.rollouts + chunk <= budget:
        model.learn(chunk * T, reset_num_timesteps=False)
        venv.training = False

        def act(t, x, obs):
            o = venv.normalize_obs(obs["state"].astype(np.float32)[None])
            return model.predict(o, deterministic=True)[0][0]
        res = [eval_agent.held_out(i, act) for i in range(20)]
        venv.training = True
        ev = {"success": float(np.mean([r.success for r in res])),
              "distance": float(np.mean([r.final_distance for r in res]))}
        history.append({"rollouts": env.rollouts, **ev, "seconds": time.perf_counter() - t0})
        log(f"  SB3 PPO: {env.rollouts} rollouts, held-out success {100 * ev['success']:.0f}% "
            f"(distance {ev['distance']:.3f} m), {time.perf_counter() - t0:.0f} s")
        if ev["success"] >= TARGET:
            reached = env.rollouts
            break
    train_agent.close()
    eval_agent.close()
    return {"sb3_rollouts_to_success": reached, "sb3_rollouts_used": env.rollouts,
            "sb3_success_rate": history[-1]["success"] if history else None, "sb3_history": history,
            "sb3_seconds": time.perf_counter() - t0, "sb3_budget": budget,
            "sb3_version": stable_baselines3.__version__,
            "sb3": "stable-baselines3 PPO (defaults; n_steps 2000, batch 100, VecNormalize) on the state MLP's inputs; "
                   f"held-out success every {chunk} rollouts"}


def measure_cnn(log) -> dict:
    log("CNN inference (batch 1, 2 threads)")
    res = {"cnn_ms_64_fp32": cnn_latency_ms(64, "fp32"), "cnn_ms_240_fp32": cnn_latency_ms(240, "fp32"),
           "cnn_ms_64": cnn_latency_ms(64, "bf16"), "cnn_ms_240": cnn_latency_ms(240, "bf16"),
           f"cnn_ms_{VISUOMOTOR_IMAGE_SIZE}_fp32": cnn_latency_ms(VISUOMOTOR_IMAGE_SIZE, "fp32"),   # the trained policy's size
           f"cnn_ms_{VISUOMOTOR_IMAGE_SIZE}": cnn_latency_ms(VISUOMOTOR_IMAGE_SIZE, "bf16"),
           "cnn_precision": "bf16 convolutions (export_torchscript precision='bf16'); fp32 in cnn_ms_*_fp32"}
    n = VISUOMOTOR_IMAGE_SIZE
    log(f"  fp32: 64x64 {res['cnn_ms_64_fp32']:.2f} ms, 240x240 {res['cnn_ms_240_fp32']:.2f} ms; "
        f"bf16 convolutions: 64x64 {res['cnn_ms_64']:.2f} ms, 240x240 {res['cnn_ms_240']:.2f} ms; "
        f"{n}x{n} (the trained policy) {res[f'cnn_ms_{n}_fp32']:.2f} ms fp32, {res[f'cnn_ms_{n}']:.2f} ms bf16")
    log("CNN inference by export format (fp32, batch 1, 2 threads, as policy_node runs it)")
    res.update(export_latency(log))
    return res


def run_insert(iterations: int, log) -> dict:
    log("ArmInsert: state-based GPS (peg into the shape sorter; success: the task's own)")
    ins = run_gps("insert", iterations, log)
    out = {"insert_success_rate": ins["success_rate"], "insert_iterations": ins["iterations"],
           "insert_history": ins["history"], "insert_seconds": ins["seconds"],
           "insert_recipe": load_experiment(EXPERIMENTS["insert"]).model_dump(mode="json")}
    out.update({f"insert_{k}": ins[k] for k in ("final_success_rate", "final_success_ci95", "final_distance")})
    return out


def merge_into(path: Path, res: dict, new: dict, phase: str, log) -> int:
    """Write `new` (one phase's keys) into the results already at `path` (or `res` if none)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = (old or res) | new
    merged[f"{phase}_measured"] = f"separately (--{phase}-only) at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    path.write_text(json.dumps(merged, indent=2, default=float))
    log(f"updated {path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="a short sanity run (2 iterations, small baseline budget)")
    ap.add_argument("--skip-image", action="store_true", help="state-based GPS only")
    ap.add_argument("--skip-insert", action="store_true", help="no ArmInsert GPS run")
    ap.add_argument("--cnn-only", action="store_true",
                    help="only the CNN latencies (and the export formats'), merged into the results already at "
                         "--json (if any)")
    ap.add_argument("--insert-only", action="store_true",
                    help="only the ArmInsert GPS run, merged into the results already at --json (if any)")
    ap.add_argument("--skip-sb3", action="store_true", help="no stable-baselines3 PPO baseline")
    ap.add_argument("--sb3-only", action="store_true",
                    help="only the stable-baselines3 PPO baseline, merged into the results already at --json (if any)")
    ap.add_argument("--sb3-budget", type=int, default=BASELINE_BUDGET, metavar="N",
                    help=f"stable-baselines3 PPO: at most N training rollouts (default {BASELINE_BUDGET})")
    args = ap.parse_args(argv)
    if args.skip_sb3 and args.sb3_only:
        ap.error("--skip-sb3 and --sb3-only contradict each other")
    if args.sb3_budget < 100:
        ap.error(f"--sb3-budget must be at least 100 rollouts (one evaluation), got {args.sb3_budget}")
    torch.set_num_threads(2)
    log = lambda m: print(m, flush=True)   # noqa: E731
    t0 = time.perf_counter()
    iters = 2 if args.quick else 10
    res = {"task": "s2r/ArmReach-v0", "conditions": 4, "samples_per_condition": 5, "held_out": 20,
           "protocol": ("training conditions and held-out episodes drawn from the same start/target distribution; "
                        "held-out seeds 10000-10019, never used for training; "
                        + ("4 new training conditions every iteration (GPS) / update (PPO)" if RESAMPLE
                           else "fixed training conditions: seeds 0-3")),
           "state_inputs": "joint_pos, joint_vel, target - tcp_pos",
           "image_inputs": f"{VISUOMOTOR_IMAGE_SIZE}x{VISUOMOTOR_IMAGE_SIZE} RGB image (target shown as a 3.5 cm green sphere on a stand), joint_pos, joint_vel, tcp_pos",
           "success_distance_m": REACH_SUCCESS_M, "quick": args.quick}
    if args.insert_only:      # one phase into an earlier run's results (the others untouched)
        return merge_into(Path(args.json), res, run_insert(iters, log), "insert", log)
    sb3_budget = 200 if args.quick else args.sb3_budget
    if args.sb3_only:
        log("model-free baseline 2 (stable-baselines3 PPO on the state MLP's inputs)")
        return merge_into(Path(args.json), res, run_sb3_baseline(sb3_budget, log), "sb3", log)
    res.update(measure_cnn(log))
    if args.cnn_only:
        rows = ("cnn_", "torchscript_", "pt2_", "onnx_", "export_")
        return merge_into(Path(args.json), res, {k: v for k, v in res.items() if k.startswith(rows)}, "cnn", log)
    log("state-based GPS")
    st = run_gps("state", iters, log)
    res.update(state_success_rate=st["success_rate"], state_iterations=st["iterations"],
               state_history=st["history"], state_seconds=st["seconds"])
    res["final_eval_seeds"] = st["final_eval_seeds"]
    res.update({f"state_{k}": st[k] for k in ("final_success_rate", "final_success_ci95", "final_distance")})
    res["gps_rollouts_to_success"] = st["rollouts"] if st["iterations"] else None
    res["gps_rollouts_used"] = st["rollouts"]
    if not args.skip_image:
        log(f"image-based GPS ({VISUOMOTOR_IMAGE_SIZE}x{VISUOMOTOR_IMAGE_SIZE})")
        im = run_gps("image", iters, log)
        res.update(image_success_rate=im["success_rate"], image_iterations=im["iterations"],
                   image_history=im["history"], image_seconds=im["seconds"],
                   image_exported_fp32_success_rate=im["exported_fp32_success_rate"],
                   image_exported_bf16_success_rate=im["exported_bf16_success_rate"])
        res.update({f"image_{k}": im[k] for k in ("final_success_rate", "final_success_ci95", "final_distance")})
    else:
        res.update(image_success_rate=None, image_iterations=None)
    if not args.skip_insert:
        res.update(run_insert(iters, log))
    log("model-free baseline (PPO on the state MLP)")
    bl = run_ppo_baseline(200 if args.quick else BASELINE_BUDGET, log)
    res.update(baseline_rollouts_to_success=bl["rollouts_to_success"], baseline_rollouts_used=bl["rollouts_used"],
               baseline_success_rate=bl["success_rate"], baseline_history=bl["history"],
               baseline="PPO (learning/ppo.py) on the state MLP's inputs; held-out success every 100 rollouts",
               baseline_seconds=bl["seconds"])
    g = res["gps_rollouts_to_success"] or res["gps_rollouts_used"]
    b = bl["rollouts_to_success"] or bl["rollouts_used"]
    res["baseline_to_gps_rollout_ratio"] = b / g
    res["ratio_note"] = ("both reached the target" if bl["rollouts_to_success"] and res["gps_rollouts_to_success"]
                         else "at least one did not reach the target: the ratio uses rollouts used (a bound)")
    if not args.skip_sb3:
        log("model-free baseline 2 (stable-baselines3 PPO on the state MLP's inputs)")
        res.update(run_sb3_baseline(sb3_budget, log))
        sb = res["sb3_rollouts_to_success"] or res["sb3_rollouts_used"]
        res["sb3_to_gps_rollout_ratio"] = sb / g
    res["total_s"] = time.perf_counter() - t0
    with open(args.json, "w") as fh:
        json.dump(res, fh, indent=2, default=float)
    log(f"wrote {args.json} ({res['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One executor interface for every embarrassingly parallel stage (rollouts, evaluation, rendering).

    from s2r.core.executor import make_executor
    with make_executor(workers=2) as ex:                     # or ray="auto" / "HOST:PORT", or workers=1
        batch = ex.run(run_one, payloads, keys=seeds, context=(build_env, ("s2r/ArmReach-v0",)),
                       shared=policy, label="evaluation")
    batch.results        # in the order of `payloads`, None where a job failed
    batch.failures       # [JobFailure(index, key, error)]: a job that raised; the rest of the batch is kept
    batch.reruns         # [{"key", "worker", "reason"}]: jobs run again after their worker died

A job is `fn(context, shared, payload) -> result`:
- `context` is built once per worker by `context=(factory, args)` (`factory(*args)`, e.g. a
  simulator) and reused by every later job and batch with the same factory and arguments (a
  worker keeps its two most recent contexts, closing older ones that have `close()`);
- `shared` is sent to each worker once per batch (a policy, the controllers of an iteration);
- `payload` is the job's own input; `key` its identity (the episode's seed), named in reports.
`fn`, the factory and its arguments must be picklable (module-level functions and classes).

Same results whatever the backend: a job must depend only on its payload, `shared` and a context
that its own job resets (an episode reset with its seed), never on which worker ran it or what
that worker ran before; results come back in payload order. Then `InlineExecutor`, `PoolExecutor`
(N spawned processes, one BLAS/torch thread each) and `RayExecutor` (one actor per worker, on a
local Ray instance or a cluster) return bit-identical results.

Faults: a job that raises is reported with its key and the rest of the batch is kept; a worker
that dies (killed process, lost Ray node) has its job run again on a replacement worker, counted in
`reruns` and logged; a job that kills `max_attempts` workers in a row is reported as a failure.
`make_executor` warns when asked for more workers than CPUs (on Ray: than the cluster's free CPUs,
which the workers then share), and turns an unreachable Ray address into an `ExecutorError` naming
it (within `connect_timeout_s`).

Progress: with `progress=True`, one line per stage (`label`) with the workers, rate and ETA
(s2r.core.logs.Progress).
"""
from __future__ import annotations

import abc
import hashlib
import logging
import math
import multiprocessing as mp
import os
import pickle
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait

__all__ = ["ExecutorError", "JobFailure", "Batch", "Executor", "InlineExecutor", "PoolExecutor", "RayExecutor",
           "make_executor", "SINGLE_THREAD_ENV", "RAY_INSTALL_HINT"]
log = logging.getLogger("s2r.executor")

# one thread per worker for every numerical library that would otherwise start a pool of its own
SINGLE_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")}
RAY_INSTALL_HINT = "Ray is not installed: pip install 's2r-robotics[ray]' (or: make install)"
CONTEXTS_KEPT = 2
IN_FLIGHT = 2           # Ray: jobs queued on each actor at a time
CPU_SETTLE_S = 5.0      # Ray: how long a new executor waits for CPUs that killed actors give back


class ExecutorError(RuntimeError):
    """The executor itself cannot go on (a worker cannot build its context, Ray unreachable, ...)."""


@dataclass(frozen=True)
class JobFailure:
    index: int          # position in the batch
    key: object         # the job's identity (its seed)
    error: str          # "Type: message"

    def __str__(self):
        return f"job {self.index} (seed {self.key}): {self.error}"


@dataclass
class Batch:
    results: list
    failures: list = field(default_factory=list)
    reruns: list = field(default_factory=list)
    workers: int = 1
    backend: str = "inline"
    seconds: float = 0.0
    worker_stats: list = field(default_factory=list)   # per worker: pid, jobs, cpu_s, wall_s

    def raise_failures(self, what: str = "job") -> None:
        """ExecutorError naming the first failed job (for callers that need every result)."""
        if self.failures:
            f = self.failures[0]
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise ExecutorError(f"{what} {f.index} (seed {f.key}) failed: {f.error}{more}")


# ----------------------------------------------------------------------------- the worker side
def _context_key(context) -> str | None:
    return None if context is None else hashlib.sha1(pickle.dumps(context)).hexdigest()


class _WorkerState:
    """What one worker keeps: its contexts (built once, reused) and the current batch's shared value."""

    def __init__(self):
        self.contexts: dict = {}

    def context(self, key, spec):
        if key is None:
            return None
        if key not in self.contexts:
            factory, args = spec
            while len(self.contexts) >= CONTEXTS_KEPT:
                old = self.contexts.pop(next(iter(self.contexts)))
                if hasattr(old, "close"):
                    old.close()
            self.contexts[key] = factory(*args)
        return self.contexts[key]

    def close(self):
        for c in self.contexts.values():
            if hasattr(c, "close"):
                try:
                    c.close()
                except Exception:       # noqa: BLE001  (closing is best effort)
                    pass
        self.contexts.clear()


def _run_job(state: _WorkerState, fn, ctx_key, ctx_spec, shared, payload):
    """("ok", result, stats) | ("error", "Type: message", None) | ("fatal", message, None)."""
    try:
        ctx = state.context(ctx_key, ctx_spec)
    except Exception as e:      # noqa: BLE001  (a worker that cannot build its context stops the batch)
        return "fatal", f"building the worker's context: {type(e).__name__}: {e}", None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        result = fn(ctx, shared, payload)
    except Exception as e:      # noqa: BLE001  (reported with the job's key; the batch goes on)
        last = traceback.extract_tb(e.__traceback__)[-1]
        return "error", f"{type(e).__name__}: {e} ({os.path.basename(last.filename)}:{last.lineno})", None
    return "ok", result, {"pid": os.getpid(), "cpu_s": time.process_time() - cpu0,
                          "wall_s": time.perf_counter() - wall0, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def _limit_threads_here():
    """One thread for torch in this worker (the BLAS libraries read SINGLE_THREAD_ENV at import)."""
    os.environ.update(SINGLE_THREAD_ENV)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _pool_worker(conn, preload):
    os.environ.update(SINGLE_THREAD_ENV)
    import importlib
    for name in preload:             # while the parent sets up: the modules every job will need
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _limit_threads_here()
    state = _WorkerState()
    batch = None
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                break
            if msg is None:
                break
            if msg[0] == "batch":
                _, batch_id, fn, ctx_key, ctx_spec, shared = msg
                batch = (batch_id, pickle.loads(fn), ctx_key, pickle.loads(ctx_spec), pickle.loads(shared))
                _limit_threads_here()
                continue
            _, batch_id, index, payload = msg
            _, fn, ctx_key, ctx_spec, shared = batch
            status, value, stats = _run_job(state, fn, ctx_key, ctx_spec, shared, payload)
            conn.send((status, batch_id, index, value, stats))
    finally:
        state.close()


# ----------------------------------------------------------------------------- the executors
def _take(status, i, value, stats, keys, out, failures, per_worker, where: str) -> None:
    """A job's answer into the batch: its result, or its failure; a fatal one (the worker cannot
    build its context) ends the batch with ExecutorError naming `where`."""
    if status == "fatal":
        raise ExecutorError(f"{where}: {value}")
    if status == "error":
        failures.append(JobFailure(i, keys[i], value))
    else:
        out[i] = value
        _stats_add(per_worker, stats)


class Executor(abc.ABC):
    """The interface: `run(fn, payloads, keys=None, context=None, shared=None, label="")` -> Batch."""
    backend = "?"
    workers = 1

    def __init__(self, progress: bool = False, max_attempts: int = 3):
        self.progress, self.max_attempts = progress, int(max_attempts)
        self.on_job_done = None      # optional hook on_job_done(label, done, total), e.g. for drills

    def run(self, fn, payloads, keys=None, context=None, shared=None, label: str = "", local=None,
            on_done=None) -> Batch:
        """Run `fn(context, shared, payload)` for every payload (see the module docstring); `local`: a
        context already built in this process, which the in-process executor uses as it is;
        `on_done(done, total)` is called as jobs finish."""
        payloads = list(payloads)
        keys = list(range(len(payloads))) if keys is None else list(keys)
        if len(keys) != len(payloads):
            raise ValueError(f"{len(keys)} keys for {len(payloads)} payloads")
        if context is not None and (len(context) != 2 or not callable(context[0])):
            raise ValueError("context must be (factory, args)")
        bar = None
        if self.progress and label and payloads:
            from .logs import Progress
            bar = Progress(len(payloads), f"{label} ({self.workers} {self.backend} worker"
                                          f"{'s' if self.workers > 1 else ''})", stream=sys.stderr, every_s=30.0)
        t0 = time.perf_counter()

        def tick(done):
            if on_done is not None:
                on_done(done, len(payloads))
            if self.on_job_done is not None:
                self.on_job_done(label, done, len(payloads))
            elapsed = time.perf_counter() - t0
            if bar is not None and (done == len(payloads) or elapsed >= 5.0):     # short stages: one line
                bar.update(done, f"{done}/{len(payloads)}, {done / max(1e-9, elapsed):.2f}/s, {elapsed:.1f} s",
                           force=done == len(payloads))
        batch = self._run(fn, payloads, keys, context, shared, tick, local)
        batch.seconds = time.perf_counter() - t0
        batch.workers, batch.backend = self.workers, self.backend
        if bar is not None:
            bar.close()
        for r in batch.reruns:
            log.warning("%s: seed %s run again: worker %s %s", label or "batch", r["key"], r["worker"], r["reason"])
        for f in batch.failures:
            log.error("%s: %s", label or "batch", f)
        return batch

    @abc.abstractmethod
    def _run(self, fn, payloads, keys, context, shared, tick, local=None) -> Batch:
        """The backend's loop: every job run (or reported failed), results in payload order."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stats_add(per_worker: dict, stats: dict) -> None:
    w = per_worker.setdefault(stats["pid"], {"pid": stats["pid"], "jobs": 0, "cpu_s": 0.0, "wall_s": 0.0,
                                             "omp_num_threads": stats["omp_num_threads"]})
    w["jobs"] += 1
    w["cpu_s"] += stats["cpu_s"]
    w["wall_s"] += stats["wall_s"]


class InlineExecutor(Executor):
    """Every job in this process, one after the other (tests, debugging, the 1-worker reference)."""
    backend = "inline"

    def __init__(self, progress: bool = False):
        super().__init__(progress)
        self._state = _WorkerState()

    def _run(self, fn, payloads, keys, context, shared, tick, local=None) -> Batch:
        out, failures, per_worker = [None] * len(payloads), [], {}
        if local is not None:
            state, key, context = _WorkerState(), "local", (lambda: local, ())
        else:
            state, key = self._state, _context_key(context)
        for i, p in enumerate(payloads):
            status, value, stats = _run_job(state, fn, key, context, shared, p)
            if status == "fatal":
                raise ExecutorError(value)
            if status == "error":
                failures.append(JobFailure(i, keys[i], value))
            else:
                out[i] = value
                _stats_add(per_worker, stats)
            tick(i + 1)
        return Batch(out, failures, worker_stats=list(per_worker.values()))

    def close(self) -> None:
        self._state.close()


class PoolExecutor(Executor):
    """N worker processes (spawned, one BLAS/torch thread each), kept across batches: each builds its
    context once. The parent keeps two jobs in flight per worker while there are more jobs than
    workers (the next one waits in the worker's pipe, so a worker does not idle for a round trip
    between short jobs; Ray's actors are fed the same way), one at the end (a slow job does not hold
    up one queued behind it); a worker that dies is replaced and its jobs run again."""
    backend = "pool"

    def __init__(self, workers: int = 2, progress: bool = False, max_attempts: int = 3, start_method: str = "spawn",
                 preload: tuple = ()):
        super().__init__(progress, max_attempts)
        self.preload = tuple(preload)
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self._ctx = mp.get_context(start_method)
        self._procs: list = []           # [(process, conn)]
        self._batch_id = 0
        for _ in range(self.workers):
            self._procs.append(self._start())

    def _start(self):
        parent, child = self._ctx.Pipe()
        saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
        os.environ.update(SINGLE_THREAD_ENV)       # inherited by the child before it imports anything
        try:
            proc = self._ctx.Process(target=_pool_worker, args=(child, self.preload), daemon=True)
            proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        return proc, parent

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self._procs]

    def _run(self, fn, payloads, keys, context, shared, tick, local=None) -> Batch:
        if not self._procs:
            raise ExecutorError("the process pool is closed")
        self._batch_id += 1
        bid = self._batch_id
        header = ("batch", bid, pickle.dumps(fn), _context_key(context), pickle.dumps(context), pickle.dumps(shared))
        todo = list(range(len(payloads)))[::-1]          # a stack: pop() gives the lowest index
        out, failures, reruns, per_worker = [None] * len(payloads), [], [], {}
        attempts = [0] * len(payloads)
        busy: dict = {}                                   # slot -> indices in flight, oldest (running) first
        fresh = set(range(len(self._procs)))              # slots that have not had this batch's header
        done = 0

        def dispatch(slot):
            proc, conn = self._procs[slot]
            i = todo.pop()
            busy.setdefault(slot, []).append(i)           # a send to a dead worker: found by its sentinel
            if slot in fresh:
                conn.send(header)
                fresh.discard(slot)
            conn.send(("job", bid, i, payloads[i]))

        try:
            while done < len(payloads):
                depth = 2 if len(todo) >= len(self._procs) else 1
                for slot in range(len(self._procs)):
                    while todo and len(busy.get(slot, ())) < depth:
                        if not busy.get(slot) and not self._procs[slot][0].is_alive():   # died between jobs
                            self._procs[slot][1].close()
                            self._procs[slot] = self._start()
                            fresh.add(slot)
                        try:
                            dispatch(slot)
                        except (BrokenPipeError, OSError):
                            break
                conns = {self._procs[s][1]: s for s in busy if busy[s]}
                sentinels = {self._procs[s][0].sentinel: s for s in busy if busy[s]}
                ready = mp_wait(list(conns) + list(sentinels), timeout=5.0)
                for r in ready:
                    if r in conns:
                        slot = conns[r]
                        try:
                            status, b, i, value, stats = r.recv()
                        except (EOFError, OSError):
                            continue                      # died while sending: the sentinel handles it
                        if b != bid:
                            continue
                        if i in busy.get(slot, ()):
                            busy[slot].remove(i)
                        attempts[i] += 1
                        _take(status, i, value, stats, keys, out, failures, per_worker,
                              f"worker (pid {self._procs[slot][0].pid})")
                        done += 1
                        tick(done)
                for r in ready:
                    if r in sentinels:
                        slot = sentinels[r]
                        proc, conn = self._procs[slot]
                        if proc.is_alive() or not busy.get(slot):
                            continue
                        lost = busy.pop(slot)
                        proc.join(timeout=1)
                        conn.close()
                        reason = f"(pid {proc.pid}) exited with code {proc.exitcode}"
                        self._procs[slot] = self._start()
                        fresh.add(slot)
                        # the first was running when the worker died: an attempt; those queued behind
                        # it never started, and go back as they were
                        i = lost[0]
                        attempts[i] += 1
                        if attempts[i] >= self.max_attempts:
                            failures.append(JobFailure(i, keys[i], f"killed {attempts[i]} workers (last {reason})"))
                            done += 1
                            tick(done)
                        else:
                            reruns.append({"key": keys[i], "index": i, "worker": proc.pid, "reason": reason})
                            todo.append(i)
                        todo.extend(reversed(lost[1:]))
        except BaseException:
            self.close()                                  # workers may hold jobs of this batch: start over
            raise
        failures.sort(key=lambda f: f.index)
        return Batch(out, failures, reruns, worker_stats=list(per_worker.values()))

    def close(self) -> None:
        for proc, conn in self._procs:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 3.0           # a worker's state is throwaway: no long goodbyes
        for proc, conn in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1)
            conn.close()
        self._procs = []


# ----------------------------------------------------------------------------- Ray
def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(RAY_INSTALL_HINT) from None
    return ray


def _check_reachable(address: str, timeout_s: float) -> None:
    """ExecutorError naming `address` unless something listens there (a TCP connect within timeout_s):
    ray.init on a dead address can wait for minutes."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray {address}: not a Ray address (HOST:PORT, ray://HOST:PORT or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ExecutorError(f"--ray {address}: no Ray cluster reachable there ({e.strerror or e})") from None


_RAY_ACTOR = None


def _ray_actor_class(ray):
    global _RAY_ACTOR
    if _RAY_ACTOR is None:
        class _RayWorker:
            def __init__(self):
                _limit_threads_here()
                self.state = _WorkerState()

            def run(self, fn, ctx_key, ctx_spec, shared, payload):
                return _run_job(self.state, fn, ctx_key, ctx_spec, shared, payload)

            def where(self):
                return os.getpid(), ray.get_runtime_context().get_node_id()

        _RAY_ACTOR = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_RayWorker)
    return _RAY_ACTOR


class RayExecutor(Executor):
    """One Ray actor per worker (num_cpus=1, one BLAS/torch thread), each building its context once;
    on the Ray instance this process is connected to, or one it connects to / starts:
    address None or "local": a new local instance (`workers` CPUs); "auto": RAY_ADDRESS, a running
    local cluster, or else a new local instance; "HOST:PORT" / "ray://HOST:PORT": that cluster.
    `workers` None: the cluster's CPUs; more workers than the cluster has free CPUs share them (a
    warning). A lost actor (its process or node died) is replaced and its job run again."""
    backend = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, progress: bool = False,
                 max_attempts: int = 3, connect_timeout_s: float = 10.0, stall_timeout_s: float = 900.0):
        super().__init__(progress, max_attempts)
        self.stall_timeout_s = float(stall_timeout_s)
        ray = self._ray = _import_ray()
        self._owns_ray = False
        if not ray.is_initialized():
            if address in (None, "local"):
                self._init_local(workers)
            elif address == "auto" and not os.environ.get("RAY_ADDRESS"):
                try:                                      # a cluster running on this machine, else a new one
                    ray.init(address="auto", logging_level=logging.WARNING,
                             runtime_env={"env_vars": dict(SINGLE_THREAD_ENV)})
                except Exception:                         # noqa: BLE001  (none running: start one)
                    self._init_local(workers)
            else:
                self._connect(os.environ["RAY_ADDRESS"] if address == "auto" else address, connect_timeout_s)
            self._owns_ray = True
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.cpus_per_worker = self._cpu_share(ray, self.workers)
        self._actor_cls = _ray_actor_class(ray)
        self._actors = [self._new_actor() for _ in range(self.workers)]

    @staticmethod
    def _cpu_share(ray, workers: int) -> float:
        """CPUs each actor asks Ray for: 1, or the cluster's free CPUs shared out when the workers
        outnumber them (a warning, as the pool gives), since an actor that asks for a CPU nobody frees
        waits for ever; no free CPU at all is an ExecutorError. Killed actors give their CPUs back a
        moment later: a short wait for them first."""
        deadline = time.monotonic() + CPU_SETTLE_S
        while (free := float(ray.available_resources().get("CPU", 0.0))) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        if free >= workers:
            return 1.0
        if free < 0.01:
            raise ExecutorError(f"Ray: no free CPU on the cluster for {workers} worker(s) "
                                f"(`ray status` shows what holds them)")
        share = math.floor(free / workers * 1e4) / 1e4           # Ray's resource precision
        msg = (f"{workers} Ray workers and {free:g} free CPUs on the cluster: the workers will share them "
               f"({share:g} CPU each)")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
        return share

    def _new_actor(self):
        """An actor on the node with the fewest of ours (SPREAD): a lost node costs as few as possible."""
        return self._actor_cls.options(scheduling_strategy="SPREAD", num_cpus=self.cpus_per_worker).remote()

    def actor_locations(self) -> list[tuple]:
        """(pid, node id) of each worker."""
        return self._ray.get([a.where.remote() for a in self._actors])

    def _connect(self, address: str, timeout_s: float) -> None:
        _check_reachable(address, timeout_s)
        try:
            self._ray.init(address=address, logging_level=logging.WARNING,
                           runtime_env={"env_vars": dict(SINGLE_THREAD_ENV)})
        except Exception as e:       # noqa: BLE001  (whatever Ray raises: one line naming the address)
            raise ExecutorError(f"--ray {address}: cannot connect ({type(e).__name__}: {e})") from None

    def _init_local(self, workers):
        ncpu = os.cpu_count() or 1
        self._ray.init(address="local", num_cpus=max(int(workers or ncpu), 1), include_dashboard=False,
                       logging_level=logging.WARNING, runtime_env={"env_vars": dict(SINGLE_THREAD_ENV)})

    def _run(self, fn, payloads, keys, context, shared, tick, local=None) -> Batch:
        ray = self._ray
        from ray.exceptions import RayActorError, WorkerCrashedError
        lost = (RayActorError, WorkerCrashedError)
        try:
            from ray.exceptions import NodeDiedError
            lost += (NodeDiedError,)
        except ImportError:
            pass
        ctx_key = _context_key(context)
        shared_ref = ray.put(shared)
        todo = list(range(len(payloads)))[::-1]
        out, failures, reruns, per_worker = [None] * len(payloads), [], [], {}
        attempts = [0] * len(payloads)
        busy: dict = {}            # future -> (slot, index, the slot's actor generation)
        done = 0
        # IN_FLIGHT jobs queued on each actor: it starts the next one as it returns one, instead of
        # idling for the round trip to this process (Ray's per-call overhead)
        free = [slot for slot in range(len(self._actors)) for _ in range(IN_FLIGHT)][::-1]
        gen = [0] * len(self._actors)
        last_progress = time.monotonic()
        while done < len(payloads):
            if time.monotonic() - last_progress > self.stall_timeout_s:
                raise ExecutorError(f"Ray: no job finished in {self.stall_timeout_s:.0f} s (workers lost and no CPU "
                                    f"left to replace them? ray status shows the cluster)")
            while free and todo:
                slot, i = free.pop(), todo.pop()
                attempts[i] += 1
                fut = self._actors[slot].run.remote(fn, ctx_key, context, shared_ref, payloads[i])
                busy[fut] = (slot, i, gen[slot])
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=5.0)
            for fut in ready:
                last_progress = time.monotonic()
                slot, i, g = busy.pop(fut)
                try:
                    status, value, stats = ray.get(fut)
                except lost as e:
                    reason = f"lost ({type(e).__name__})"
                    if g == gen[slot]:        # the first of its jobs to report the loss: replace the actor
                        gen[slot] += 1
                        self._actors[slot] = self._new_actor()         # scheduled on a living node
                        free = [x for x in free if x != slot] + [slot] * IN_FLIGHT
                    if attempts[i] >= self.max_attempts:
                        failures.append(JobFailure(i, keys[i], f"lost {attempts[i]} workers (last {reason})"))
                        done += 1
                        tick(done)
                    else:
                        reruns.append({"key": keys[i], "index": i, "worker": f"actor {slot}", "reason": reason})
                        todo.append(i)
                    continue
                if g == gen[slot]:
                    free.append(slot)
                _take(status, i, value, stats, keys, out, failures, per_worker, f"Ray worker {slot}")
                done += 1
                tick(done)
        failures.sort(key=lambda f: f.index)
        return Batch(out, failures, reruns, worker_stats=list(per_worker.values()))

    def close(self) -> None:
        ray = self._ray
        for a in getattr(self, "_actors", []):
            try:
                ray.kill(a)
            except Exception:     # noqa: BLE001  (already gone)
                pass
        self._actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


def make_executor(workers: int | None = None, ray: str | None = None, progress: bool = False,
                  connect_timeout_s: float = 10.0, preload: tuple = ()) -> Executor:
    """The executor of `--workers N` / `--ray auto|local|ADDRESS`: Ray when asked for (workers None:
    the cluster's CPUs), else the process pool for N > 1 (its workers importing the `preload`
    modules as they start), else inline. A warning (not a failure) when N is above this machine's
    CPU count."""
    if workers is not None and int(workers) < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    ncpu = os.cpu_count() or 1
    if workers is not None and int(workers) > ncpu and ray in (None, "local", "auto"):
        warnings.warn(f"--workers {workers} is more than this machine's {ncpu} CPUs: the workers will share them",
                      RuntimeWarning, stacklevel=2)
        log.warning("--workers %s is more than this machine's %d CPUs: the workers will share them", workers, ncpu)
    if ray:
        return RayExecutor(workers, ray, progress, connect_timeout_s=connect_timeout_s)
    if workers and int(workers) > 1:
        return PoolExecutor(int(workers), progress, preload=preload)
    return InlineExecutor(progress)

"""The training function: one invocation runs one role of a plan for as many iterations as its time allows.

Each iteration of a compute role: read the n weight shards of iteration `it`, compute the gradient on its
slice of the global batch, write one gradient shard per aggregator. Each iteration of an aggregating role
(worker j in scatter-reduce, the extra function in central mode): wait for shard j from every worker,
average them in worker order (bit-identical whatever the arrival order), apply SGD with momentum to weight
shard j and write shard j of iteration it+1. Then the role records `done = it` and garbage-collects the
shard history it owns (two iterations back, which nobody can still need).

A re-invoked role resumes at `done + 1`; every value it rewrites is identical to the first write, so crashes,
kills and timeouts change nothing but time and money. Before the time limit the function returns
"checkpoint" and the driver invokes it again.

Hierarchical sync (`_hierarchical_iteration`) runs scatter-reduce in two levels over groups of g workers:
within a group on g level-1 shards, then across the G = n/g groups on the final shards, so a worker moves
O(g + G) values per iteration instead of O(n); the final weight/momentum shards are the flat layout.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siegecraft.core.models import build_model, load_flat_params
from siegecraft.engines.serverless import context, data_blob
from siegecraft.engines.serverless.layout import JobKeys, from_bytes, shard_bounds, split, to_bytes
from siegecraft.engines.serverless.specs import JobSpec, PlanSpec, WorkerTask
from siegecraft.engines.serverless.store import Store, connect

_MODELS: dict[tuple, nn.Module] = {}
_PERMUTATIONS: dict[tuple[int, int, int], np.ndarray] = {}


class Stalled(TimeoutError):
    """A peer's key did not appear in time (the peer crashed or was killed); the driver re-invokes."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{len(missing)} key(s) missing, first {missing[0]!r}")
        self.missing = missing


@dataclass
class RoleStats:
    """What one invocation did and where its time went (the planner's measurements)."""

    role: int
    status: str = "done"
    next_it: int = 0
    iterations: int = 0
    setup_s: float = 0.0
    read_s: float = 0.0
    compute_s: float = 0.0
    scatter_s: float = 0.0
    reduce_s: float = 0.0
    loss_sum: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    values: int = 0
    setup_bytes: int = 0
    setup_requests: int = 0
    setup_values: int = 0
    first_start: float = 0.0
    last_end: float = 0.0
    warm_cache: bool = False
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_for(job: JobSpec) -> nn.Module:
    """The job's model, built once per container (warm invocations reuse it)."""
    key = (
        job.model,
        job.in_channels,
        job.num_classes,
        job.image_size,
        tuple(sorted(job.model_options.items())),
    )
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = build_model(
            job.model,
            in_channels=job.in_channels,
            num_classes=job.num_classes,
            image_size=job.image_size,
            **job.model_options,
        )
    return _MODELS[key]


def permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The sample order of an epoch: the same in every function, every re-run and every driver."""
    key = (seed, epoch, num_samples)
    if key not in _PERMUTATIONS:
        if len(_PERMUTATIONS) > 4:
            _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return _PERMUTATIONS[key]


def batch_indices(job: JobSpec, plan: PlanSpec, it: int, worker: int) -> np.ndarray:
    """Worker `worker`'s slice of the global batch of iteration `it`."""
    b, n = plan.config.batch_size, plan.config.workers
    start = plan.epoch_offset + (it - plan.start_it) * n * b + worker * b
    return permutation(job.seed, plan.epoch, job.num_samples)[start : start + b]


def flat_grad(model: nn.Module) -> torch.Tensor:
    """Gradients laid out like `flat_params` (zeros for floating buffers, which SGD leaves alone)."""
    params = dict(model.named_parameters())
    parts = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if not tensor.is_floating_point():
            continue
        param = params.get(name)
        grad = param.grad if param is not None else None
        parts.append(grad.reshape(-1) if grad is not None else torch.zeros(tensor.numel()))
    return torch.cat(parts).to(torch.float32)


def gradient(
    model: nn.Module, weights: np.ndarray, x: torch.Tensor, y: torch.Tensor
) -> tuple[np.ndarray, float]:
    """Mean cross-entropy gradient of the batch at `weights`, and the batch loss."""
    load_flat_params(model, torch.from_numpy(weights.copy()))
    model.train()
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return flat_grad(model).numpy(), float(loss.item())


def sgd_step(
    w: np.ndarray, m: np.ndarray, g: np.ndarray, *, lr: float, momentum: float, weight_decay: float
) -> tuple[np.ndarray, np.ndarray]:
    """torch.optim.SGD's update (dampening 0, no Nesterov) on one shard."""
    if weight_decay:
        g = g + np.float32(weight_decay) * w
    m_new = np.float32(momentum) * m + g if momentum else g
    return (w - np.float32(lr) * m_new).astype(np.float32), m_new.astype(np.float32)


def wait_for(
    store: Store, keys: list[str], timeout_s: float, have: dict[str, bytes] | None = None
) -> list[bytes]:
    """Values of `keys`, polling (0.5 ms doubling to 10 ms) until all exist; raises `Stalled` on timeout."""
    values = dict(have or {})
    missing = [k for k in keys if k not in values]
    deadline, delay = time.monotonic() + timeout_s, 0.0005
    while missing:
        for key, value in zip(missing, store.get_many(missing)):
            if value is not None:
                values[key] = value
        missing = [k for k in missing if k not in values]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise Stalled(missing)
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    return [values[k] for k in keys]


def train_worker(task: WorkerTask) -> dict[str, Any]:
    """Deployable entry point: run `task.role` of `task.plan` until done, a checkpoint, or a stall."""
    job, plan, role = task.job, task.plan, task.role
    ctx = context.current()
    stats = RoleStats(role=role, next_it=plan.start_it)
    start = time.perf_counter()
    store = connect(job.store, network_mb_s=ctx.network_mb_s)
    try:
        _run_role(task, store, stats, start)
    except Stalled as exc:
        stats.status, stats.missing = "stalled", exc.missing[:4]
    finally:
        stats.bytes_sent = store.traffic.sent
        stats.bytes_received = store.traffic.received - stats.setup_bytes
        stats.requests = store.traffic.requests - stats.setup_requests
        stats.values = store.traffic.values - stats.setup_values
        store.close()
    return stats.to_dict()


def _run_role(task: WorkerTask, store: Store, stats: RoleStats, start: float) -> None:
    job, plan, role = task.job, task.plan, task.role
    ctx = context.current()
    keys, name, n = JobKeys(job.job), plan.name, plan.config.workers
    computes, agg = plan.computes(role), plan.aggregates(role)
    x = y = model = None
    if computes and not job.synthetic_gradients:
        stats.warm_cache = data_blob.is_cached(store, keys)
        x, y = data_blob.fetch(store, keys)
        model = model_for(job)
        torch.manual_seed(job.seed)
    done = store.get(keys.done(name, role))
    it = max(plan.start_it, int(done) + 1) if done is not None else plan.start_it
    stats.next_it = it
    stats.setup_s = time.perf_counter() - start
    stats.setup_bytes = store.traffic.received
    stats.setup_requests, stats.setup_values = store.traffic.requests, store.traffic.values
    own_w: dict[int, np.ndarray] = {}
    own_m: dict[int, np.ndarray] = {}
    own_w1: dict[int, np.ndarray] = {}
    slowest = 0.0
    while it < plan.end_it:
        remaining = ctx.remaining_s()
        bounded = task.max_iterations is not None and stats.iterations >= task.max_iterations
        if bounded or remaining < task.checkpoint_margin_s + 1.5 * slowest:
            stats.status = "checkpoint"
            return
        budget = max(0.1, min(task.sync_timeout_s, remaining - task.checkpoint_margin_s))
        t_iter = time.perf_counter()
        if stats.iterations == 0:
            stats.first_start = time.time()
        if plan.sync == "hierarchical":
            _hierarchical_iteration(task, store, it, own_w, own_m, own_w1, budget, stats, model, x, y)
            garbage = _hierarchical_garbage(task, it - 1)
        else:
            own_grad = None
            if computes:
                own_grad = _compute_and_scatter(task, store, it, own_w, budget, stats, model, x, y)
            if agg is not None:
                t0 = time.perf_counter()
                _reduce_shard(task, store, it, agg, own_grad, own_w, own_m, budget)
                stats.reduce_s += time.perf_counter() - t0
            garbage = []
            if agg is not None:
                garbage = [keys.weights(name, it - 1, agg), keys.momentum(name, it - 1, agg)]
                garbage += [keys.grad(name, it - 1, i, agg) for i in range(n) if i != role]
        store.put(keys.done(name, role), str(it).encode())
        if it - 1 >= plan.start_it and garbage:
            store.delete(garbage)
        for cache in (own_w, own_m, own_w1):
            cache.pop(it, None)
        it += 1
        stats.iterations += 1
        stats.next_it = it
        stats.last_end = time.time()
        slowest = max(slowest, time.perf_counter() - t_iter)


def _compute_and_scatter(
    task: WorkerTask,
    store: Store,
    it: int,
    own_w: dict[int, np.ndarray],
    budget: float,
    stats: RoleStats,
    model: nn.Module | None,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
) -> np.ndarray | None:
    """Read the weights of iteration `it`, compute this worker's gradient, write its shards for the other
    aggregators; returns the shard this role aggregates itself (None if it aggregates nothing)."""
    job, plan, role = task.job, task.plan, task.role
    keys, name, agg = JobKeys(job.job), plan.name, plan.aggregates(role)
    t0 = time.perf_counter()
    wkeys = [keys.weights(name, it, k) for k in range(plan.shards)]
    have = {wkeys[agg]: to_bytes(own_w[it])} if agg is not None and it in own_w else {}
    shards = [from_bytes(s) for s in wait_for(store, wkeys, budget, have)]
    weights = np.concatenate(shards)
    t1 = time.perf_counter()
    grad, loss = _gradient_at(task, it, weights, model, x, y)
    t2 = time.perf_counter()
    parts = split(grad, plan.shards)
    store.put_many({keys.grad(name, it, role, k): to_bytes(parts[k]) for k in range(plan.shards) if k != agg})
    stats.read_s += t1 - t0
    stats.compute_s += t2 - t1
    stats.scatter_s += time.perf_counter() - t2
    stats.loss_sum += loss
    if agg is None:
        return None
    own_w.setdefault(it, shards[agg])
    return parts[agg]


def _reduce_shard(
    task: WorkerTask,
    store: Store,
    it: int,
    agg: int,
    own_grad: np.ndarray | None,
    own_w: dict[int, np.ndarray],
    own_m: dict[int, np.ndarray],
    budget: float,
) -> None:
    """Average shard `agg` over all workers, step it, and write weights and momentum of iteration it+1."""
    job, plan, role = task.job, task.plan, task.role
    keys, name, n = JobKeys(job.job), plan.name, plan.config.workers
    peers = [i for i in range(n) if not (i == role and own_grad is not None)]
    received = dict(zip(peers, wait_for(store, [keys.grad(name, it, i, agg) for i in peers], budget)))
    total: np.ndarray | None = None
    for i in range(n):
        part = own_grad if i not in received else from_bytes(received[i])
        total = part.copy() if total is None else total + part
    avg = (total / np.float32(n)).astype(np.float32)  # type: ignore[operator]
    if it not in own_w or it not in own_m:
        w_raw, m_raw = wait_for(store, [keys.weights(name, it, agg), keys.momentum(name, it, agg)], budget)
        own_w.setdefault(it, from_bytes(w_raw))
        own_m[it] = from_bytes(m_raw)
    w_new, m_new = sgd_step(
        own_w[it], own_m[it], avg, lr=job.lr, momentum=job.momentum, weight_decay=job.weight_decay
    )
    store.put_many(
        {keys.weights(name, it + 1, agg): to_bytes(w_new), keys.momentum(name, it + 1, agg): to_bytes(m_new)}
    )
    own_w[it + 1], own_m[it + 1] = w_new, m_new


def _hierarchical_iteration(
    task: WorkerTask,
    store: Store,
    it: int,
    own_w: dict[int, np.ndarray],
    own_m: dict[int, np.ndarray],
    own_w1: dict[int, np.ndarray],
    budget: float,
    stats: RoleStats,
    model: nn.Module | None,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
) -> None:
    """One iteration of worker (a, j): read the weights, compute, reduce final shard k = j*G + a over both
    levels, step it, and (member j of group 0) assemble level-1 weight shard j of the next iteration."""
    job, plan = task.job, task.plan
    keys, k = JobKeys(job.job), plan.hierarchy.owned(task.role)
    t0 = time.perf_counter()
    weights = _hierarchical_weights(task, store, it, own_w, own_w1, budget)
    t1 = time.perf_counter()
    grad, loss = _gradient_at(task, it, weights, model, x, y)
    t2 = time.perf_counter()
    avg = _two_level_average(task, store, it, grad, budget, stats)
    t3 = time.perf_counter()
    if it not in own_w or it not in own_m:
        w_raw, m_raw = wait_for(
            store, [keys.weights(plan.name, it, k), keys.momentum(plan.name, it, k)], budget
        )
        own_w.setdefault(it, from_bytes(w_raw))
        own_m[it] = from_bytes(m_raw)
    w_new, m_new = sgd_step(
        own_w[it], own_m[it], avg, lr=job.lr, momentum=job.momentum, weight_decay=job.weight_decay
    )
    store.put_many(
        {
            keys.weights(plan.name, it + 1, k): to_bytes(w_new),
            keys.momentum(plan.name, it + 1, k): to_bytes(m_new),
        }
    )
    own_w[it + 1], own_m[it + 1] = w_new, m_new
    a, j = plan.hierarchy.position(task.role)
    if plan.reads_level1 and a == 0 and it + 1 < plan.end_it:
        own_w1[it + 1] = _gather_level1(task, store, it + 1, j, w_new, budget)
    stats.read_s += t1 - t0
    stats.compute_s += t2 - t1
    stats.reduce_s += time.perf_counter() - t3
    stats.loss_sum += loss


def _hierarchical_weights(
    task: WorkerTask,
    store: Store,
    it: int,
    own_w: dict[int, np.ndarray],
    own_w1: dict[int, np.ndarray],
    budget: float,
) -> np.ndarray:
    """The weights of iteration `it`: the g level-1 shards, or the n final shards in a plan's first
    iteration (the driver's re-sharding writes only those) and when the gather step is off."""
    plan, h = task.plan, task.plan.hierarchy
    keys, name = JobKeys(task.job.job), plan.name
    if plan.reads_level1 and it > plan.start_it:
        wkeys = [keys.level1_weights(name, it, i) for i in range(h.group_size)]
        mine, cache = h.position(task.role)[1], own_w1
    else:
        wkeys = [keys.weights(name, it, s) for s in range(plan.config.workers)]
        mine, cache = h.owned(task.role), own_w
    have = {wkeys[mine]: to_bytes(cache[it])} if it in cache else {}
    return np.concatenate([from_bytes(v) for v in wait_for(store, wkeys, budget, have)])


def _two_level_average(
    task: WorkerTask, store: Store, it: int, grad: np.ndarray, budget: float, stats: RoleStats
) -> np.ndarray:
    """Mean over all n workers of final shard k = j*G + a of the gradient: level 1 sums level-1 shard j over
    group a (member order), level 2 sums final shard k over the G groups (group order); fixed orders, so
    the same bits whatever the arrival order."""
    plan, role, h = task.plan, task.role, task.plan.hierarchy
    keys, name = JobKeys(task.job.job), plan.name
    a, j = h.position(role)
    t0 = time.perf_counter()
    bounds1 = h.level1_bounds(grad.size)
    level1 = [grad[lo:hi] for lo, hi in bounds1]
    store.put_many(
        {keys.level1_grad(name, it, role, i): to_bytes(level1[i]) for i in range(h.group_size) if i != j}
    )
    stats.scatter_s += time.perf_counter() - t0
    peers = [r for r in h.members(a) if r != role]
    got = dict(zip(peers, wait_for(store, [keys.level1_grad(name, it, r, j) for r in peers], budget)))
    partial = _sum_in_order([level1[j] if r == role else from_bytes(got[r]) for r in h.members(a)])
    finals, lo1 = shard_bounds(grad.size, plan.config.workers), bounds1[j][0]
    pieces = [partial[finals[s][0] - lo1 : finals[s][1] - lo1] for s in h.finals(j)]
    k, groups = h.owned(role), h.groups
    store.put_many(
        {keys.level2_grad(name, it, a, j * groups + b): to_bytes(pieces[b]) for b in range(groups) if b != a}
    )
    others = [b for b in range(groups) if b != a]
    got2 = dict(zip(others, wait_for(store, [keys.level2_grad(name, it, b, k) for b in others], budget)))
    total = _sum_in_order([pieces[a] if b == a else from_bytes(got2[b]) for b in range(groups)])
    return (total / np.float32(plan.config.workers)).astype(np.float32)


def _gather_level1(
    task: WorkerTask, store: Store, it: int, j: int, own: np.ndarray, budget: float
) -> np.ndarray:
    """Assemble level-1 weight shard j of iteration `it` from its G final shards (the first is `own`) and
    write it, so every worker reads g weight values instead of n."""
    keys, name = JobKeys(task.job.job), task.plan.name
    fkeys = [keys.weights(name, it, s) for s in task.plan.hierarchy.finals(j)]
    shard = np.concatenate([from_bytes(v) for v in wait_for(store, fkeys, budget, {fkeys[0]: to_bytes(own)})])
    store.put(keys.level1_weights(name, it, j), to_bytes(shard))
    return shard


def _hierarchical_garbage(task: WorkerTask, it: int) -> list[str]:
    """Keys of iteration `it` whose only remaining reader was this role (two iterations back nobody, a
    restarted peer included, can still need them): its final shard, the gradient pieces sent to it, and
    the level-1 weight shard it assembled."""
    plan, role = task.plan, task.role
    keys, name, h = JobKeys(task.job.job), plan.name, plan.hierarchy
    a, j = h.position(role)
    k = h.owned(role)
    old = [keys.weights(name, it, k), keys.momentum(name, it, k)]
    old += [keys.level1_grad(name, it, r, j) for r in h.members(a) if r != role]
    old += [keys.level2_grad(name, it, b, k) for b in range(h.groups) if b != a]
    if plan.reads_level1 and a == 0:
        old.append(keys.level1_weights(name, it, j))
    return old


def _gradient_at(
    task: WorkerTask,
    it: int,
    weights: np.ndarray,
    model: nn.Module | None,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
) -> tuple[np.ndarray, float]:
    """This role's gradient and loss at `weights` (synthetic g = 1e-3 * w in synchronisation benchmarks)."""
    if task.job.synthetic_gradients:
        return (weights * np.float32(1e-3)).astype(np.float32), 0.0
    idx = torch.from_numpy(batch_indices(task.job, task.plan, it, task.role))
    return gradient(model, weights, x[idx], y[idx])  # type: ignore[arg-type,index]


def _sum_in_order(parts: list[np.ndarray]) -> np.ndarray:
    """Sum float32 vectors left to right (a fixed order: the same bits whatever the arrival order)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total

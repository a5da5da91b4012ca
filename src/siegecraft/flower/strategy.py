"""Every siegecraft aggregation rule and strategy defense as a Flower `Strategy`, through one adapter.

`SiegecraftStrategy` is Flower's FedAvg with its aggregation step replaced: the clients' returned
parameters become update vectors (returned minus sent), siegecraft's server strategy (a registered
aggregator, wrapped by registered defenses such as norm_clip or fltrust) combines them, and its server
rule (fedavg, fedavgm) applies the result. `strategy("krum", f=1)` builds one by registered name, so a
rule or defense added to the registries is available on Flower with no extra code.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetPropertiesIns,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from siegecraft.engines.federated.aggregation import AGGREGATORS, get_aggregator
from siegecraft.engines.federated.sampling import sample_clients
from siegecraft.engines.federated.strategy import STRATEGIES, Strategy
from siegecraft.engines.federated.wrappers import (
    STRATEGY_DEFENSES,
    DefenseContext,
    ServerUpdate,
    wrap_strategy,
)
from siegecraft.flower.arrays import NDArrays, arrays_of, flat_of

#: the fit/evaluate config keys the bridge sends: the round, and "report your attack's final metrics"
ROUND_KEY, FINAL_KEY = "server_round", "siegecraft_final"
#: the property / fit metric a bridge client reports: which siegecraft client (partition) it is
PARTITION_KEY = "partition_id"
#: the evaluate metric an attack client reports its adversary's final metrics in (a JSON object)
ATTACK_REPORT_KEY = "siegecraft_attack"


class PartitionSampler:
    """siegecraft's client sampling on Flower: the same clients per round as siegecraft's own engine.

    Flower's simulation gives its nodes random ids; the sampler asks each node once (get_properties) which
    partition it holds, then picks the proxies of `sample_clients(rnd, ...)`.
    """

    def __init__(self, clients: int, per_round: int, method: str = "random", seed: int = 0) -> None:
        self.clients, self.per_round, self.method, self.seed = clients, per_round, method, seed
        self.by_partition: dict[int, ClientProxy] = {}
        self.partition_of: dict[str, int] = {}

    def connect(self, client_manager: ClientManager) -> None:
        """Map every node to its partition id (once; in parallel, since each query is a message round trip)."""
        if self.by_partition:
            return
        client_manager.wait_for(self.clients, timeout=86_400)
        proxies = list(client_manager.all().values())

        def ask(proxy: ClientProxy) -> int:
            res = proxy.get_properties(GetPropertiesIns(config={}), timeout=None, group_id=0)
            if PARTITION_KEY not in res.properties:
                raise RuntimeError(f"Flower node {proxy.cid} did not report {PARTITION_KEY!r} in its properties; "
                                   "siegecraft sampling needs clients that do (SiegecraftClient, AttackClient)")
            return int(res.properties[PARTITION_KEY])

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(ask, proxies))
        self.by_partition = dict(zip(ids, proxies))
        self.partition_of = {p.cid: i for i, p in zip(ids, proxies)}

    def sample(self, rnd: int, client_manager: ClientManager) -> list[tuple[int, ClientProxy]]:
        """(partition id, proxy) of the clients siegecraft's engine samples in round `rnd`."""
        self.connect(client_manager)
        ids = sample_clients(rnd, self.clients, self.per_round, method=self.method, seed=self.seed)
        return [(i, self.by_partition[i]) for i in ids]

    def proxies(self, ids: Sequence[int], client_manager: ClientManager) -> list[ClientProxy]:
        self.connect(client_manager)
        return [self.by_partition[i] for i in ids]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, Scalar]:
    """Flower metrics must be scalars: numbers and strings pass, anything else is sent as JSON text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in metrics.items()}


class SiegecraftStrategy(FedAvg):
    """Flower FedAvg whose aggregation is a siegecraft server strategy (aggregator + defenses + server rule).

    `sampler` picks clients as siegecraft's engine does (default: Flower's own random sampling);
    `final_round` with `report_clients` asks those clients, after the last round, to report their attack's
    final metrics; `strict` makes a failed client an error instead of a dropped result.
    """

    def __init__(self, rule: Strategy, *, sampler: PartitionSampler | None = None, final_round: int | None = None,
                 report_clients: Sequence[int] = (), strict: bool = False, **fedavg: Any) -> None:
        user_fit_config = fedavg.pop("on_fit_config_fn", None)
        user_eval_config = fedavg.pop("on_evaluate_config_fn", None)
        super().__init__(on_fit_config_fn=self._fit_config, on_evaluate_config_fn=self._evaluate_config, **fedavg)
        self.rule, self.sampler, self.final_round, self.strict = rule, sampler, final_round, strict
        self.report_clients = list(report_clients)
        self.user_fit_config: Callable[[int], dict[str, Scalar]] | None = user_fit_config
        self.user_eval_config: Callable[[int], dict[str, Scalar]] | None = user_eval_config
        self.global_arrays: NDArrays | None = None
        self.sampled: list[int] = []
        self.last_round: dict[str, Any] = {}  # what the last aggregate_fit did (the config runner logs it)
        self.attack_reports: dict[str, dict[str, Any]] = {}  # client -> its adversary's final metrics

    def __repr__(self) -> str:
        return f"SiegecraftStrategy({self.rule!r})"

    # -- configuration ------------------------------------------------------------------------
    def _fit_config(self, rnd: int) -> dict[str, Scalar]:
        return {**(self.user_fit_config(rnd) if self.user_fit_config else {}), ROUND_KEY: rnd}

    def _evaluate_config(self, rnd: int) -> dict[str, Scalar]:
        config = {**(self.user_eval_config(rnd) if self.user_eval_config else {}), ROUND_KEY: rnd}
        return {**config, FINAL_KEY: True} if rnd == self.final_round else config

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        params = super().initialize_parameters(client_manager)
        if params is not None:
            self.global_arrays = parameters_to_ndarrays(params)
        return params

    def begin(self, server_round: int, parameters: Parameters) -> None:
        """Remember the global model this round's clients start from (their updates are measured against it)."""
        del server_round
        self.global_arrays = parameters_to_ndarrays(parameters)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        self.begin(server_round, parameters)
        if self.sampler is None:
            return super().configure_fit(server_round, parameters, client_manager)
        picked = self.sampler.sample(server_round, client_manager)
        self.sampled = [i for i, _ in picked]
        ins = FitIns(parameters, self._fit_config(server_round))
        return [(proxy, ins) for _, proxy in picked]

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        if server_round == self.final_round and self.report_clients and self.sampler is not None:
            ins = EvaluateIns(parameters, self._evaluate_config(server_round))
            return [(p, ins) for p in self.sampler.proxies(self.report_clients, client_manager)]
        return super().configure_evaluate(server_round, parameters, client_manager)

    # -- aggregation --------------------------------------------------------------------------
    def client_id(self, proxy: ClientProxy, res: FitRes | EvaluateRes) -> str:
        """The siegecraft client id of a result: its partition if known, else Flower's node id."""
        if self.sampler is not None and proxy.cid in self.sampler.partition_of:
            return str(self.sampler.partition_of[proxy.cid])
        return str(res.metrics.get(PARTITION_KEY, proxy.cid))

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]) -> tuple[Parameters | None,
                                                                                          dict[str, Scalar]]:
        if failures and self.strict:
            first = failures[0]
            raise RuntimeError(f"round {server_round}: {len(failures)} Flower client(s) failed; first: "
                               f"{first if isinstance(first, BaseException) else first[1].status}")
        if not results or (failures and not self.accept_failures) or self.global_arrays is None:
            return None, {}
        new, info = self.aggregate_arrays(server_round, [
            (self.client_id(proxy, res), parameters_to_ndarrays(res.parameters), res.num_examples, res.metrics)
            for proxy, res in results
        ])
        self.last_round = info
        if new is not None:
            self.global_arrays = new  # the current global model, until the next round's configure_fit
        metrics = scalar_metrics({k: v for k, v in info.items() if k != "clients"})
        return (ndarrays_to_parameters(new) if new is not None else None), metrics

    def aggregate_arrays(self, server_round: int, results: list[tuple[str, NDArrays, int, Mapping[str, Any]]]
                         ) -> tuple[NDArrays | None, dict[str, Any]]:
        """New global arrays from (client, returned arrays, samples, metrics), and what the round did."""
        assert self.global_arrays is not None
        order = {str(c): i for i, c in enumerate(self.sampled)}
        results = sorted(results, key=lambda r: order.get(r[0], len(order)))  # siegecraft's stacking order
        start = flat_of(self.global_arrays)
        kept, dropped = [], []
        for cid, arrays, n, metrics in results:
            update = flat_of(arrays) - start
            (kept if bool(torch.isfinite(update).all()) else dropped).append((cid, update, n, metrics))
        info: dict[str, Any] = {"clients": [c for c, *_ in results], "dropped": [c for c, *_ in dropped]}
        if not kept:
            return None, info
        weights = torch.tensor([float(n) for _, _, n, _ in kept])
        losses = [float(m.get("loss", math.nan)) for *_, m in kept]
        if not any(math.isnan(v) for v in losses):
            info["train_loss"] = float(sum(v * w for v, w in zip(losses, weights.tolist())) / float(weights.sum()))
        self.rule.begin_round(server_round, start)
        update = self.rule.combine(torch.stack([u for _, u, _, _ in kept]), weights)
        info.update(self.rule.round_metrics())
        return arrays_of(self.rule.apply(start, update), self.global_arrays), info

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list[tuple[ClientProxy, EvaluateRes] | BaseException]
                           ) -> tuple[float | None, dict[str, Scalar]]:
        reports = [(self.client_id(p, r), r.metrics[ATTACK_REPORT_KEY]) for p, r in results
                   if ATTACK_REPORT_KEY in r.metrics]
        for cid, text in reports:
            self.attack_reports[cid] = json.loads(str(text))
        honest = [(p, r) for p, r in results if r.num_examples > 0]
        if not honest:
            return None, {}
        return super().aggregate_evaluate(server_round, honest, failures)


def strategy_names() -> list[str]:
    """Every name `strategy()` accepts: the registered aggregators, then the strategy defenses."""
    return [*AGGREGATORS.names(), *STRATEGY_DEFENSES.names()]


_BRIDGE_KEYS = {"sampler", "final_round", "report_clients", "strict"}


def strategy(name: str = "mean", *, server: str = "fedavg", server_lr: float = 1.0, server_momentum: float = 0.9,
             defenses: Sequence[str] = (), defense_options: Mapping[str, Mapping[str, Any]] | None = None,
             server_update: ServerUpdate | None = None, **kwargs: Any) -> SiegecraftStrategy:
    """A Flower strategy running siegecraft's registered rule `name` (an aggregator or a strategy defense).

    Keyword options of the rule (`f=1` for krum, `max_norm=2.0` for norm_clip) go to it; FedAvg's own
    keywords (`fraction_fit`, `evaluate_fn`, `initial_parameters`, ...) go to Flower. `defenses` adds more
    wrappers around it (first screens first), `server` picks siegecraft's server rule, and `server_update`
    (`fn(round, global_flat) -> the server's own update`) feeds defenses that need root data (fltrust).
    """
    defense_options = {k: dict(v) for k, v in (defense_options or {}).items()}
    if name in AGGREGATORS:
        params = inspect.signature(AGGREGATORS.get(name)).parameters.values()
        own = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        aggregator, wrappers = get_aggregator(name, **{k: kwargs.pop(k) for k in list(kwargs) if k in own}), []
    elif name in STRATEGY_DEFENSES:
        own = set(STRATEGY_DEFENSES.get(name).options_model.model_fields)
        defense_options[name] = {**defense_options.get(name, {}), **{k: kwargs.pop(k) for k in list(kwargs)
                                                                     if k in own}}
        aggregator, wrappers = get_aggregator("mean"), [name]
    else:
        raise ValueError(f"unknown siegecraft rule {name!r}; known: {', '.join(strategy_names())}")
    flower_keys = set(inspect.signature(FedAvg.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - flower_keys - _BRIDGE_KEYS)
    if unknown:
        raise TypeError(f"strategy({name!r}): unknown option {unknown[0]!r}; allowed: the rule's own "
                        f"({', '.join(sorted(own)) or 'none'}) or FedAvg's ({', '.join(sorted(flower_keys))})")
    server_kwargs: dict[str, Any] = {"aggregator": aggregator, "server_lr": server_lr}
    if server == "fedavgm":
        server_kwargs["momentum"] = server_momentum
    rule = STRATEGIES.get(server)(**server_kwargs)
    rule = wrap_strategy(rule, [*wrappers, *defenses], defense_options, DefenseContext(server_update=server_update))
    return SiegecraftStrategy(rule, **kwargs)

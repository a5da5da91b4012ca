"""A Flower federation in this process, without Ray: Flower's own `Server` round loop driving client apps
through in-process proxies. Each message builds a fresh client from `client_fn(context)`, as Flower's
simulation does, and each node keeps its `Context` (so `context.state` persists across rounds)."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import RecordDict
from flwr.client import Client
from flwr.common import (
    Context,
    DisconnectRes,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    ReconnectIns,
)
from flwr.server import Server, ServerAppComponents, SimpleClientManager
from flwr.server.client_proxy import ClientProxy

ClientFn = Callable[[Context], Client]


class InProcessProxy(ClientProxy):
    """One node: every message is answered by a fresh client from `client_fn`; `before` runs first."""

    def __init__(self, partition: int, client_fn: ClientFn, before: Callable[[], None] | None = None) -> None:
        super().__init__(str(1000 + partition))
        self.client_fn, self.before = client_fn, before
        self.context = Context(run_id=1, node_id=1000 + partition, node_config={"partition-id": partition},
                               state=RecordDict(), run_config={})

    def _client(self) -> Client:
        if self.before is not None:
            self.before()
        return self.client_fn(self.context)

    def get_properties(self, ins: GetPropertiesIns, timeout: float | None, group_id: int | None) -> GetPropertiesRes:
        return self._client().get_properties(ins)

    def get_parameters(self, ins: GetParametersIns, timeout: float | None, group_id: int | None) -> GetParametersRes:
        return self._client().get_parameters(ins)

    def fit(self, ins: FitIns, timeout: float | None, group_id: int | None) -> FitRes:
        return self._client().fit(ins)

    def evaluate(self, ins: EvaluateIns, timeout: float | None, group_id: int | None) -> EvaluateRes:
        return self._client().evaluate(ins)

    def reconnect(self, ins: ReconnectIns, timeout: float | None, group_id: int | None) -> DisconnectRes:
        return DisconnectRes(reason="")


def run_in_process(server_fn: Callable[[Context], ServerAppComponents], client_fn: ClientFn, nodes: int,
                   before: Callable[[], None] | None = None) -> None:
    """Run the apps' rounds with Flower's Server, one client at a time (clients share this process's trainer)."""
    components = server_fn(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    manager = SimpleClientManager()
    for i in range(nodes):
        manager.register(InProcessProxy(i, client_fn, before))
    server = Server(client_manager=manager, strategy=components.strategy)
    server.set_max_workers(1)
    server.fit(num_rounds=components.config.num_rounds, timeout=None)

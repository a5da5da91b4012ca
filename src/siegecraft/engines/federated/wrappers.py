"""Server-side defenses as strategy wrappers: each holds an inner strategy and screens the update stack.

`[defense] names = ["norm_clip", "fltrust"]` wraps the configured strategy (FedAvg with its aggregator)
so that the first name screens first: norm_clip(fltrust(fedavg)). A wrapper may rescale, reweight or
drop client updates before handing them to the inner `combine`; `apply` and the server state stay the
inner strategy's. Options of a wrapper live in `[defense.options.<name>]`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.registry import Registry
from siegecraft.engines.federated.strategy import Strategy

ServerUpdate = Callable[[int, torch.Tensor], torch.Tensor]


class WrapperOptions(BaseModel):
    """Base of every wrapper's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class DefenseContext:
    """What the server holds beyond the updates: an optional root dataset and a way to train on it.

    `server_update(rnd, global_weights)` returns the weight delta of the server's own local training on
    `root` (FLTrust's reference direction); both are None unless a wrapper asked for root data.
    """

    root: ImageDataset | None = None
    server_update: ServerUpdate | None = None


class StrategyWrapper(Strategy):
    """A defense around an inner strategy: `screen` the stack, then let the inner strategy combine it.

    A wrapper that sets `needs_root_data` gets a server root dataset of `options.root_size` samples,
    withheld from every client.
    """

    options_model: ClassVar[type[WrapperOptions]] = WrapperOptions
    needs_root_data: ClassVar[bool] = False

    def __init__(self, inner: Strategy, options: WrapperOptions, ctx: DefenseContext) -> None:
        super().__init__(aggregator=inner.aggregator, server_lr=inner.server_lr)
        self.inner = inner
        self.options = options
        self.ctx = ctx
        self.metrics: dict[str, Any] = {}

    def screen(self, updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (updates, weights) the inner strategy should see; records what it did in `self.metrics`."""
        raise NotImplementedError

    def begin_round(self, rnd: int, global_weights: torch.Tensor) -> None:
        self.inner.begin_round(rnd, global_weights)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        self.metrics = {}
        kept, kept_weights = self.screen(updates, weights)
        if kept.shape[0] == 0:  # every update rejected: the global model stays where it is
            return torch.zeros_like(updates[0])
        return self.inner.combine(kept, kept_weights)

    def apply(self, global_weights: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.inner.apply(global_weights, update)

    def round_metrics(self) -> dict[str, Any]:
        return {**self.inner.round_metrics(), **self.metrics}

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state.get("inner", {}))


STRATEGY_DEFENSES: Registry[type[StrategyWrapper]] = Registry("defense")


def wrapper_options(name: str, raw: Any) -> WrapperOptions:
    """Validate `[defense.options.<name>]` for a registered wrapper; ValueError names the bad key."""
    cls = STRATEGY_DEFENSES.get(name)
    if not isinstance(raw, Mapping):
        # ValueError, not TypeError: config validation reports every ValueError as a config mistake
        raise ValueError(f"defense.options.{name} must be a table of options, got {raw!r}")  # noqa: TRY004
    try:
        return cls.options_model.model_validate(dict(raw))
    except ValidationError as err:
        allowed = ", ".join(sorted(cls.options_model.model_fields)) or "(none)"
        problems = "; ".join(
            f"defense.options.{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{problems} (allowed keys: {allowed})") from None


def split_defense_options(
    names: list[str], options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(aggregator options, {wrapper name: its table}): keys named after a listed wrapper are its table."""
    wrapped = {n: options.get(n, {}) for n in names}
    return {k: v for k, v in options.items() if k not in names}, wrapped


def wrap_strategy(
    strategy: Strategy, names: list[str], options: Mapping[str, Any], ctx: DefenseContext | None = None
) -> Strategy:
    """`strategy` wrapped by each named defense; `names[0]` ends up outermost, so it screens first."""
    if len(set(names)) != len(names):
        raise ValueError(f"defense.names repeat a defense: {names}")
    ctx = ctx or DefenseContext()
    for name in reversed(names):
        cls = STRATEGY_DEFENSES.get(name)
        if cls.needs_root_data and ctx.server_update is None:
            raise ValueError(f"defense {name!r} needs a server root dataset, and none was provided")
        strategy = cls(strategy, wrapper_options(name, options.get(name, {})), ctx)
    return strategy


def root_size_needed(names: list[str], options: dict[str, Any]) -> int:
    """How many root samples the listed defenses need (0: none asks for a root dataset)."""
    sizes = [
        int(getattr(STRATEGY_DEFENSES.get(n).options_model.model_validate(options.get(n, {})), "root_size", 0))
        for n in names
        if STRATEGY_DEFENSES.get(n).needs_root_data
    ]
    return max(sizes, default=0)


def split_root_dataset(train: ImageDataset, size: int, *, seed: int) -> tuple[ImageDataset, ImageDataset | None]:
    """(client training set, server root set): `size` random samples go to the server, none to clients."""
    if size == 0:
        return train, None
    if size >= len(train):
        raise ValueError(f"a server root dataset of {size} samples leaves nothing for the clients ({len(train)} in all)")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 65_537 + 17))
    root_idx, rest = perm[:size].sort().values, perm[size:].sort().values
    return train.subset(rest), train.subset(root_idx)

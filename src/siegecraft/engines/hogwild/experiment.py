"""`topology = "hogwild"`: the experiment schema of the Hogwild engine (`[hogwild]`, `[attack]`, `[defense]`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from siegecraft.core.config import ExperimentBase, FieldError, Section, check_options, registered
from siegecraft.engines.hogwild.config import HogwildConfig, HogwildSection
from siegecraft.engines.hogwild.extensions import (
    ASYNC_DEFENSES,
    HOGWILD_ATTACKS,
    ThreadAdversary,
    build_async_defenses,
)

TRAIN_KEYS = ("lr", "momentum", "weight_decay", "batch_size", "epochs", "lr_decay", "lr_milestones", "lr_gamma")
HogwildAttackName = registered(HOGWILD_ATTACKS)


class HogwildAttackConfig(Section):
    """A scheduling adversary by registered name, with its options."""

    name: HogwildAttackName = "none"
    options: dict[str, Any] = Field(default_factory=dict, description="validated by the attack's options model")


    @model_validator(mode="after")
    def _options(self) -> HogwildAttackConfig:
        check_options(self.options, HOGWILD_ATTACKS.get(self.name).options_model, ("options",))
        return self

    def build(self) -> ThreadAdversary:
        cls = HOGWILD_ATTACKS.get(self.name)
        return cls(cls.options_model.model_validate(self.options))


class HogwildDefenseConfig(Section):
    """Asynchronous defenses by registered name; `[defense.options.<name>]` holds each one's options."""

    names: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> HogwildDefenseConfig:
        for i, name in enumerate(self.names):
            if name not in ASYNC_DEFENSES:
                raise FieldError(("names", i), name, f"not an async defense; known: {', '.join(ASYNC_DEFENSES.names())}")
        extra = sorted(set(self.options) - set(self.names))
        if extra:
            raise FieldError(("options", extra[0]), self.options[extra[0]],
                             f"options of a defense not in defense.names {self.names}")
        build_async_defenses(self.names, self.options)
        return self


class HogwildExperiment(ExperimentBase):
    """Asynchronous shared-memory training, optionally under a scheduling adversary and async defenses."""

    topology: Literal["hogwild"] = "hogwild"
    hogwild: HogwildSection = Field(default_factory=HogwildSection)
    attack: HogwildAttackConfig = Field(default_factory=HogwildAttackConfig)
    defense: HogwildDefenseConfig = Field(default_factory=HogwildDefenseConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> HogwildExperiment:
        self.check_train_keys(TRAIN_KEYS)
        cfg = self.settings()
        self.attack.build().check(cfg)  # the class count is checked against the data in preflight
        return self

    def settings(self) -> HogwildConfig:
        """The resolved run settings: `[hogwild]` + `[train]` + the seed."""
        return HogwildConfig.resolve(self.hogwild, self.train, self.seed)

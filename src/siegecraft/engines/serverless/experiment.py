"""`topology = "serverless"`: the experiment schema of the SMLT engine (`[serverless]` plus `[train]`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from siegecraft.core.config import ExperimentBase, FieldError
from siegecraft.core.training import TrainConfig
from siegecraft.engines.serverless.config import ServerlessConfig, ServerlessSection

TRAIN_KEYS = ("lr", "momentum", "weight_decay", "batch_size", "epochs")


class ServerlessExperiment(ExperimentBase):
    """Data-parallel training on functions with a deadline, a budget, or a fixed configuration."""

    topology: Literal["serverless"] = "serverless"
    serverless: ServerlessSection = Field(default_factory=ServerlessSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> ServerlessExperiment:
        self.check_train_keys(TRAIN_KEYS)
        if self.serverless.adaptive and self.train.batch_size != TrainConfig().batch_size:
            raise FieldError(("train", "batch_size"), self.train.batch_size,
                             "the planner chooses the batch size when serverless.deadline_s or budget_usd is "
                             "set; list the candidates in serverless.planner.batch_size")
        return self

    def settings(self) -> ServerlessConfig:
        """The job's resolved settings: `[serverless]` + `[train]`."""
        return ServerlessConfig.resolve(self.serverless, self.train)

"""`PlatformProfile`: the performance model's prior measured on one platform, and how far to trust it.

The generic prior (`Coefficients()`) is off by up to ~10x on a given platform, so without a profile the
preflight refuses a target only below what the prior predicts with every coefficient 10x better
(`PRIOR_TOLERANCE`). A profile holds coefficients measured on the platform itself by a calibration step
(`python benchmarks/serverless_scheduler.py --recalibrate` for the emulated platform) and, per coefficient,
its measured `spread`: the relative standard deviation across repeated calibrations. The preflight then
allows each coefficient to be `1 + SIGMAS * spread` better than calibrated (`optimistic`), no more.
Stored as JSON; `[serverless] platform_profile` names the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from siegecraft.engines.serverless.perf_model import Coefficients, PerformanceModel

FORMAT = "siegecraft.serverless.platform_profile/1"
SIGMAS = 3.0
"""Standard deviations of measured spread a coefficient may be better than calibrated (three: under a normal
error a calibration this far off happens about once in 700, so a feasible target is almost never refused)."""
COEFFICIENTS = tuple(f.name for f in fields(Coefficients))
SPREAD_KEYS = (*COEFFICIENTS, "parallel_efficiency")
_KEYS = {"format", "coefficients", "parallel_efficiency", "spread", "num_params"}
_OPTIONAL = {"platform", "model", "source", "spread_from"}


class ProfileError(ValueError):
    """A profile file that cannot be used; the message is one line saying why."""


@dataclass(frozen=True)
class PlatformProfile:
    """Calibrated prior coefficients (for one model: compute time depends on it) and their measured spread."""

    coefficients: Coefficients
    parallel_efficiency: float
    spread: dict[str, float]
    num_params: int
    platform: str = ""
    model: str = ""
    source: str = ""
    spread_from: str = ""

    def tolerance(self, key: str) -> float:
        """How much better than calibrated coefficient `key` may turn out: 1 + SIGMAS x its spread."""
        return 1.0 + SIGMAS * self.spread[key]

    def optimistic(self) -> tuple[Coefficients, float]:
        """(coefficients, thread efficiency) with each one its tolerance better than calibrated: the fastest and
        cheapest platform the measured spread allows for (efficiency at most 1)."""
        better = {k: getattr(self.coefficients, k) / self.tolerance(k) for k in COEFFICIENTS}
        efficiency = min(1.0, self.parallel_efficiency * self.tolerance("parallel_efficiency"))
        return replace(self.coefficients, **better), efficiency

    def models(self, base: PerformanceModel) -> tuple[PerformanceModel, PerformanceModel]:
        """(prior, optimistic) models of `base`'s job with this profile's coefficients."""
        coef, efficiency = self.optimistic()
        return base.with_prior(self.coefficients, self.parallel_efficiency), base.with_prior(coef, efficiency)

    def labels(self, path: str) -> dict[str, str]:
        """How a refusal names this prior and its tolerance (`Feasibility.prior`, `.allowance`)."""
        return {"prior": f"calibrated prior from serverless.platform_profile = {path!r}",
                "allowance": f"each coefficient up to {SIGMAS:g} standard deviations of its measured spread better "
                             f"than calibrated ({self.describe()})"}  # fmt: skip

    def describe(self) -> str:
        """The largest tolerances, for messages: `compute_per_sample_s 1.12x, startup_cold_s 1.05x, ...`."""
        top = sorted(SPREAD_KEYS, key=lambda k: -self.spread[k])[:3]
        return ", ".join(f"{k} {self.tolerance(k):.2f}x" for k in top)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {"format": FORMAT, **out, "coefficients": asdict(self.coefficients)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, raw: Any) -> PlatformProfile:
        """Validate a parsed profile (ProfileError naming the first bad key)."""
        if not isinstance(raw, dict):
            raise ProfileError(f"not a JSON object but {type(raw).__name__}")
        missing = sorted(_KEYS - raw.keys())
        unknown = sorted(raw.keys() - _KEYS - _OPTIONAL)
        if missing or unknown:
            what = f"missing key {missing[0]!r}" if missing else f"unknown key {unknown[0]!r}"
            raise ProfileError(f"{what}; a profile has {', '.join(sorted(_KEYS | _OPTIONAL))}")
        if raw["format"] != FORMAT:
            raise ProfileError(f"format = {raw['format']!r}; expected {FORMAT!r}")
        coef_raw = raw["coefficients"]
        names = [f.name for f in fields(Coefficients)]
        if not isinstance(coef_raw, dict) or set(coef_raw) != set(names):
            got = sorted(coef_raw) if isinstance(coef_raw, dict) else coef_raw
            raise ProfileError(f"coefficients = {got!r}; must hold exactly {', '.join(names)}")
        for name in names:
            _check_number(f"coefficients.{name}", coef_raw[name], positive=name == "cost_factor")
        _check_number("parallel_efficiency", raw["parallel_efficiency"], positive=True)
        if raw["parallel_efficiency"] > 1:
            raise ProfileError(f"parallel_efficiency = {raw['parallel_efficiency']!r}; must lie in (0, 1]")
        spread = raw["spread"]
        if not isinstance(spread, dict) or set(spread) != set(SPREAD_KEYS):
            got = sorted(spread) if isinstance(spread, dict) else spread
            raise ProfileError(f"spread = {got!r}; must hold exactly {', '.join(SPREAD_KEYS)}")
        for name in SPREAD_KEYS:
            _check_number(f"spread.{name}", spread[name], positive=False)
        if not isinstance(raw["num_params"], int) or isinstance(raw["num_params"], bool) or raw["num_params"] < 1:
            raise ProfileError(f"num_params = {raw['num_params']!r}; must be a positive integer")
        text = {k: str(raw.get(k, "")) for k in _OPTIONAL}
        return cls(Coefficients(**{n: float(coef_raw[n]) for n in names}), float(raw["parallel_efficiency"]),
                   {k: float(spread[k]) for k in SPREAD_KEYS}, raw["num_params"], **text)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> PlatformProfile:
        """Read and validate a profile file (ProfileError: missing, unreadable, not JSON, bad keys)."""
        p = Path(path)
        if not p.is_file():
            raise ProfileError(f"no such file ({p.resolve()}); write one with the calibration step")
        try:
            raw = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ProfileError(f"not a readable JSON file: {str(err).splitlines()[0]}") from None
        return cls.from_dict(raw)


def _check_number(key: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value <= 0):
        raise ProfileError(f"{key} = {value!r}; must be a finite number {'> 0' if positive else '>= 0'}")

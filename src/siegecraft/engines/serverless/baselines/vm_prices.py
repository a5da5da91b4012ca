"""Virtual machines the baselines rent, with documented on-demand prices, and how EC2 bills them.

Prices are AWS EC2 on-demand, Linux, us-east-1, as listed on https://aws.amazon.com/ec2/pricing/on-demand/
(c5.large $0.085/h, c5.2xlarge $0.34/h); network figures are the instances' documented baseline
bandwidth (https://docs.aws.amazon.com/ec2/latest/instancetypes/co.html: c5.large 0.75 Gbit/s, c5.2xlarge
2.5 Gbit/s; both burst "up to 10 Gbit/s" for a while, which we do not assume). EC2 bills Linux instances
per second with a 60-second minimum, from the moment the instance is running, so boot time is paid for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# Assumed time from the launch request until a worker VM runs our code: EC2 instance start to a booted
# OS with the training environment ready (tens of seconds is typical for a stock AMI; we take one minute).
VM_BOOT_S = 60.0
MIN_BILLED_S = 60.0


@dataclass(frozen=True)
class VmType:
    """One EC2 instance type: size, hourly on-demand price and baseline network bandwidth."""

    name: str
    vcpus: int
    memory_gib: float
    usd_per_hour: float
    network_mb_s: float

    def cost(self, seconds: float) -> float:
        """Dollar cost of running one instance for `seconds` (per-second billing, 60 s minimum)."""
        billed = max(MIN_BILLED_S, math.ceil(max(seconds, 0.0)))
        return billed * self.usd_per_hour / 3600.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A worker VM matched to the 1,769 MB function tier (one vCPU of compute): the smallest compute-optimised
# instance, 2 vCPUs (one physical core) and 4 GiB; the worker runs one compute thread, as the function does.
C5_LARGE = VmType("c5.large", 2, 4.0, 0.085, 0.75e3 / 8)
# The server VM (Cirrus' parameter server, or the Redis store of the store-based designs).
C5_2XLARGE = VmType("c5.2xlarge", 8, 16.0, 0.34, 2.5e3 / 8)

"""`chameleon`: the poisoning hijack with camouflaged samples (Salem et al.'s Camouflager).

At its attack round the attacker trains an encoder-decoder on the snapshot: it takes a hijacking sample
x_h and an original-task cover x_o and outputs x_c that looks like x_o (visual L1) but has the snapshot
features of x_h (semantic L1); `adverse` also pushes x_c's features away from x_o's. The attacker then
poisons with (x_c, mapped label of x_h) and, at inference, camouflages each query the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from siegecraft.attacks.baselines.poison import Poison, PoisonOptions
from siegecraft.attacks.hijackfl.execution import Hijacker
from siegecraft.attacks.hijackfl.mapping import ClassMapping
from siegecraft.core.models import SiegeModel
from siegecraft.engines.federated.extensions import FederationContext

__all__ = [
    "CamouflageHijacker", "Camouflager", "Chameleon", "ChameleonOptions", "camouflage_loss", "new_camouflager",
    "train_camouflager",
]


class ChameleonOptions(PoisonOptions):
    """The Camouflager's dials on top of the poisoning ones."""

    camouflage_epochs: int = Field(5, ge=1)
    camouflage_lr: float = Field(1e-3, gt=0)
    camouflage_batch: int = Field(64, ge=1)
    semantic_weight: float = Field(1.0, ge=0, description="weight of the feature (semantic) L1 term")
    adverse: bool = Field(False, description="also maximise the feature L1 to the cover (similar datasets)")
    width: int = Field(16, ge=4, description="channels of the Camouflager's first layer")


def _encoder(channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
    )


class Camouflager(nn.Module):
    """Two encoders (hijacking sample, cover) and one decoder back to an image in [0, 1]."""

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()
        self.hijack_encoder = _encoder(channels, width)
        self.cover_encoder = _encoder(channels, width)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, hijack: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
        code = torch.cat([self.hijack_encoder(hijack), self.cover_encoder(cover)], 1)
        out = self.decoder(code)
        if out.shape[-2:] != hijack.shape[-2:]:  # odd sizes: the stride-2 round trip loses a pixel
            out = F.interpolate(out, size=hijack.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def camouflage_loss(
    snapshot: SiegeModel, cam: Camouflager, xh: torch.Tensor, xo: torch.Tensor, opts: ChameleonOptions
) -> torch.Tensor:
    """Visual L1 to the cover plus semantic L1 to the hijacking sample's features (minus the cover's, adverse)."""
    xc = cam(xh, xo)
    fc = snapshot.features(xc)
    with torch.no_grad():
        fh, fo = snapshot.features(xh), snapshot.features(xo)
    loss = F.l1_loss(xc, xo) + opts.semantic_weight * F.l1_loss(fc, fh)
    if opts.adverse:
        loss = loss - opts.semantic_weight * F.l1_loss(fc, fo)
    return loss


def new_camouflager(channels: int, width: int, seed: int) -> Camouflager:
    """A freshly initialised Camouflager; seeded without touching torch's global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Camouflager(channels, width)


def train_camouflager(
    snapshot: SiegeModel, hijack_x: torch.Tensor, cover_x: torch.Tensor, opts: ChameleonOptions, seed: int
) -> Camouflager:
    """Fit the Camouflager on random (hijacking, cover) pairs under the snapshot's features."""
    gen = torch.Generator().manual_seed(seed)
    cam = new_camouflager(hijack_x.shape[1], opts.width, seed)
    opt = torch.optim.Adam(cam.parameters(), lr=opts.camouflage_lr)
    snapshot.eval()
    for _ in range(opts.camouflage_epochs):
        for idx in torch.randperm(len(hijack_x), generator=gen).split(opts.camouflage_batch):
            xh = hijack_x[idx]
            xo = cover_x[torch.randint(len(cover_x), (len(idx),), generator=gen)]
            loss = camouflage_loss(snapshot, cam, xh, xo, opts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    cam.eval()
    for p in cam.parameters():
        p.requires_grad_(False)
    return cam


class CamouflageHijacker(Hijacker):
    """One camouflaged query per input (cover i mod n); the most probable mapped class, translated back."""

    def __init__(self, mapping: ClassMapping, camouflager: Camouflager, covers: torch.Tensor) -> None:
        super().__init__(mapping)
        self.camouflager = camouflager
        self.covers = covers

    @torch.no_grad()
    def queries(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(len(x)) % len(self.covers)
        return self.camouflager(x, self.covers[idx])[None]

    def decode(self, probs: torch.Tensor) -> torch.Tensor:
        return self.mapping.decode(probs[0])


class Chameleon(Poison):
    """Poisoning with camouflaged samples, and camouflaged queries at inference."""

    options_model = ChameleonOptions
    options: ChameleonOptions

    def __init__(self, clients: list[int], options: ChameleonOptions) -> None:
        super().__init__(clients, options)
        self.camouflager: Camouflager | None = None
        self.covers: torch.Tensor | None = None

    def poison_inputs(self, ctx: FederationContext, snapshot: SiegeModel) -> torch.Tensor:
        assert self.data is not None
        own = self.attacker_data(ctx).x
        self.camouflager = train_camouflager(snapshot, self.data.train.x, own, self.options, ctx.exp.seed)
        self.covers = own[torch.randperm(len(own), generator=torch.Generator().manual_seed(ctx.exp.seed))]
        hijacker = CamouflageHijacker(self.mapping_or_fail(), self.camouflager, self.covers)
        return torch.cat([hijacker.queries(xb)[0] for xb in self.data.train.x.split(512)])

    def mapping_or_fail(self) -> ClassMapping:
        if self.mapping is None:
            raise RuntimeError("chameleon: the class mapping is computed before the camouflaged samples")
        return self.mapping

    def inference_hijacker(self, ctx: FederationContext, mapping: ClassMapping) -> Hijacker:
        del ctx
        assert self.camouflager is not None and self.covers is not None
        return CamouflageHijacker(mapping, self.camouflager, self.covers)

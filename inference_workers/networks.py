"""Small networks the demo bundles build from MONAI blocks (referenced by ``_target_`` in their inference.json)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn


class EvidencePoolingClassifier(nn.Module):
    """Image -> coarse evidence map (one logit per cell) -> one image logit by log-sum-exp pooling.

    A finding the size of a few cells would be diluted by average pooling and a plain max learns
    slowly (one cell gets the gradient); log-sum-exp sits between the two. The evidence map is the
    thing GradCAM sees through the last block (``encoder``), so the heatmap points at the cells that
    raised the score, and training can supervise the map directly where the truth is known.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 48, 64),
        strides: Sequence[int] = (2, 2, 2, 1),
        pool_sharpness: float = 4.0,
        norm: str = "BATCH",
        act: str = "PRELU",
    ) -> None:
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError("channels and strides must have the same length")
        blocks: list[nn.Module] = []
        previous = in_channels
        for index, (width, stride) in enumerate(zip(channels, strides, strict=True)):
            if index == 0:
                blocks.append(Convolution(spatial_dims, previous, width, strides=stride, norm=norm, act=act))
            else:
                blocks.append(ResidualUnit(spatial_dims, previous, width, strides=stride, norm=norm, act=act))
            previous = width
        self.encoder = nn.Sequential(*blocks)
        self.evidence = Convolution(spatial_dims, previous, 1, kernel_size=1, conv_only=True)
        self.pool_sharpness = float(pool_sharpness)

    def evidence_map(self, image: torch.Tensor) -> torch.Tensor:
        return self.evidence(self.encoder(image))

    def pool(self, evidence: torch.Tensor) -> torch.Tensor:
        flat = evidence.flatten(1) * self.pool_sharpness
        return (torch.logsumexp(flat, dim=1, keepdim=True) - math.log(flat.shape[1])) / self.pool_sharpness

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.pool(self.evidence_map(image))

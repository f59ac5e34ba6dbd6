"""Building blocks of segloop's own networks: double convolutions, attention gates, encoders.

The encoders share one interface with smp's: ``out_channels`` (one width per
feature level, level ``i`` at stride ``2**i``), ``output_stride`` and a
``forward`` that returns the list of features, finest first. So a decoder
works the same on the classic U-Net's plain encoder and on an smp encoder
(VGG16, ResNet50, ...).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AttentionGate", "DoubleConv", "PlainEncoder", "SmpEncoder", "make_encoder"]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm (optional) and ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Widths.
    batch_norm : bool
        Add batch normalisation after each convolution (the original U-Net
        had none; it makes training from scratch much steadier).
    dropout : float
        Dropout probability after the block (0: none).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True,
                 dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3,
                                    padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, "Attention U-Net").

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))`` and the gate returns
    ``x * alpha``: the coarser gating signal ``g`` (resampled to ``x``'s size
    when it differs) decides which skip pixels pass.

    Parameters
    ----------
    x_channels, g_channels : int
        Widths of the skip features and of the gating signal.
    inter_channels : int, optional
        Width of the joint space (default: half of ``x_channels``, at least 1).
    """

    def __init__(self, x_channels: int, g_channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(1, x_channels // 2)
        self.theta_x = nn.Conv2d(x_channels, inter, 1, bias=False)
        self.phi_g = nn.Conv2d(g_channels, inter, 1, bias=True)
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1, bias=True), nn.BatchNorm2d(1), nn.Sigmoid())
        #: The last attention coefficients (B, 1, H, W), for inspection.
        self.last_alpha: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if g.shape[-2:] != x.shape[-2:]:
            g = nn.functional.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
        alpha = self.psi(torch.relu(self.theta_x(x) + self.phi_g(g)))
        self.last_alpha = alpha.detach()
        return x * alpha


class PlainEncoder(nn.Module):
    """The classic U-Net's contracting path: double convolutions and 2x2 max pooling.

    Level 0 is ``base_channels`` wide at full resolution; each of the
    ``depth`` poolings halves the size and doubles the width (64, 128, 256,
    512, 1024 for the paper's base 64 and four poolings).
    """

    def __init__(self, in_channels: int, base_channels: int = 64, depth: int = 4,
                 batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.out_channels = widths
        self.output_stride = 2 ** depth
        self.blocks = nn.ModuleList()
        for i, w in enumerate(widths):
            # Dropout in the two deepest levels, as in the U-Net paper's "drop-out layers at the
            # end of the contracting path".
            drop = dropout if i >= depth - 1 else 0.0
            self.blocks.append(DoubleConv(in_channels if i == 0 else widths[i - 1], w, batch_norm, drop))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features


class SmpEncoder(nn.Module):
    """An smp encoder (``vgg16``, ``resnet50``, ``tu-...``) behind the same interface.

    smp's encoders return ``depth + 1`` features, level ``i`` at stride ``2**i``
    (for ResNets level 0 is the input itself).
    """

    def __init__(self, name: str, in_channels: int, depth: int, weights: str | None) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.encoder = smp.encoders.get_encoder(name, in_channels=in_channels, depth=depth,
                                                weights=weights)
        self.out_channels = list(self.encoder.out_channels)
        self.output_stride = 2 ** depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(x))


def make_encoder(name: str, in_channels: int, depth: int, weights: str | None,
                 base_channels: int, batch_norm: bool, dropout: float = 0.0) -> nn.Module:
    """The plain U-Net encoder for ``name == "plain"``, else the smp encoder ``name``.

    Raises
    ------
    ValueError
        For an encoder smp does not know (the registry turns it into one line).
    """
    if name == "plain":
        if weights is not None:
            raise ValueError("the plain U-Net encoder has no pre-trained weights; use "
                             "encoder weights 'none' or an encoder such as vgg16")
        return PlainEncoder(in_channels, base_channels, depth, batch_norm, dropout)
    return SmpEncoder(name, in_channels, depth, weights)


def init_config(**kwargs: Any) -> dict[str, Any]:
    """The init arguments saved in ``config.json`` (pre-trained weights never: they are in the file)."""
    out = dict(kwargs)
    out["encoder_weights"] = None
    return out

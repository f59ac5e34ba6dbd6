"""UNet 3+ (Huang et al. 2020) with full-scale skip connections, and its attention variant.

Every decoder level ``i`` sees every scale: the encoder features of the
finer levels (max-pooled down to level ``i``), the encoder feature of level
``i`` itself, and the decoder features of all coarser levels (bilinearly
upsampled), each reduced to ``cat_channels`` by a 3x3 convolution and then
fused by one more 3x3 convolution of ``levels * cat_channels`` channels.

With ``attention=True`` (the "Attention VGG-UNet3+" of the course the users
follow, with a VGG16 encoder that is usually frozen) every encoder
contribution passes an additive attention gate driven by the coarser
decoder level, as in the Attention U-Net. With ``deep_supervision=True``
each decoder level also has a 3x3 output head; in training the extra
logits (upsampled to full size) are exposed as ``side_logits`` and the
trainer averages the loss over all heads; inference uses the finest head.
The paper's classification-guided module is left out (it targets organ
presence in CT slices, not microscopy).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from napari_segloop.core.models.blocks import AttentionGate, init_config, make_encoder

__all__ = ["UNet3Plus"]


def _conv(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet3Plus(nn.Module):
    """UNet 3+ on a VGG16 (or any smp, or the plain) encoder.

    Parameters
    ----------
    in_channels, classes : int
        Input channels and output channels (logits).
    encoder_name : str
        ``"vgg16"`` by default; any smp encoder, or ``"plain"``.
    encoder_depth : int
        Number of downsamplings (4: five levels as in the paper); the input
        multiple is ``2 ** encoder_depth``.
    encoder_weights : {None, "imagenet"}
        Pre-trained weights of an smp encoder (only when the model is created).
    cat_channels : int
        Width of each full-scale contribution (64 in the paper).
    attention : bool
        Attention gates on the encoder contributions ("Attention UNet 3+").
    deep_supervision : bool
        An output head per decoder level, all trained (see the module docstring).
    base_channels : int
        First width of the plain encoder (ignored for an smp encoder).
    batch_norm : bool
        Batch norm in the decoder (and the plain encoder).
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, encoder_name: str = "vgg16",
                 encoder_depth: int = 4, encoder_weights: str | None = None, cat_channels: int = 64,
                 attention: bool = False, deep_supervision: bool = False, base_channels: int = 64,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.encoder = make_encoder(encoder_name, in_channels, encoder_depth, encoder_weights,
                                    base_channels, batch_norm)
        enc = [int(c) for c in self.encoder.out_channels]
        n = len(enc)
        self.levels = n
        fused = n * cat_channels
        # contrib[i][k]: from source level k into decoder level i (k <= i: encoder, k > i: decoder).
        self.contrib = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.gates = nn.ModuleList() if attention else None
        for i in range(n - 1):
            row = nn.ModuleList()
            for k in range(n):
                if k <= i:
                    width = enc[k]
                elif k == n - 1:
                    width = enc[-1]
                else:
                    width = fused
                row.append(_conv(width, cat_channels, batch_norm))
            self.contrib.append(row)
            self.fuse.append(_conv(fused, fused, batch_norm))
            if self.gates is not None:
                self.gates.append(nn.ModuleList(
                    AttentionGate(cat_channels, cat_channels) for _ in range(i + 1)))
        self.segmentation_head = nn.Conv2d(fused, classes, 3, padding=1)
        self.side_heads = nn.ModuleList(
            nn.Conv2d(fused, classes, 3, padding=1) for _ in range(1, n - 1)
        ) if deep_supervision else None
        #: Extra logits of the coarser heads from the last training forward (deep supervision).
        self.side_logits: list[torch.Tensor] = []
        self.input_multiple = 2 ** encoder_depth
        self.config = init_config(in_channels=in_channels, classes=classes, encoder_name=encoder_name,
                                  encoder_depth=encoder_depth, cat_channels=cat_channels,
                                  attention=attention, deep_supervision=deep_supervision,
                                  base_channels=base_channels, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder(x)
        n = self.levels
        decoded: dict[int, torch.Tensor] = {n - 1: enc[-1]}
        for i in range(n - 2, -1, -1):
            size = enc[i].shape[-2:]
            row = self.contrib[i]
            coarse = []
            for k in range(i + 1, n):
                up = F.interpolate(decoded[k], size=size, mode="bilinear", align_corners=False)
                coarse.append(row[k](up))
            fine = []
            for k in range(i + 1):
                src = enc[k] if k == i else F.max_pool2d(enc[k], 2 ** (i - k), 2 ** (i - k))
                part = row[k](src)
                if self.gates is not None:
                    part = self.gates[i][k](part, coarse[0])
                fine.append(part)
            decoded[i] = self.fuse[i](torch.cat(fine + coarse, dim=1))
        out = self.segmentation_head(decoded[0])
        if self.side_heads is not None and self.training:
            full = x.shape[-2:]
            self.side_logits = [
                F.interpolate(head(decoded[i]), size=full, mode="bilinear", align_corners=False)
                for i, head in zip(range(1, n - 1), self.side_heads, strict=True)
            ]
        else:
            self.side_logits = []
        return out

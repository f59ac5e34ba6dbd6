"""The classic U-Net (Ronneberger et al. 2015) and the Attention U-Net (Oktay et al. 2018).

Both are an encoder (the plain contracting path, or an smp encoder such as
VGG16) and an expanding path of 2x2 transposed convolutions, each followed by
concatenation with the skip features and two 3x3 convolutions. The Attention
U-Net passes each skip through an additive attention gate driven by the
upsampled decoder features first.

Differences from the 2015 paper, stated so nobody is surprised: convolutions
are padded ("same"), so the output has the input's size and tiles need no
crop; batch normalisation is on by default (``batch_norm=False`` gives the
paper's plain convolutions).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_segloop.core.models.blocks import AttentionGate, DoubleConv, init_config, make_encoder

__all__ = ["AttentionUNet", "ClassicUNet", "UNetDecoder"]


def decoder_widths(encoder_channels: list[int]) -> list[int]:
    """Width of each decoder level (one per skip level): the skip's width, at least 16.

    smp ResNets give the raw input as level 0 (1 channel); the decoder's top
    level stays 16 wide there.
    """
    return [max(16, int(c)) for c in encoder_channels[:-1]]


class UNetDecoder(nn.Module):
    """U-Net expanding path: transposed convolution, (gated) skip, two convolutions, per level."""

    def __init__(self, encoder_channels: list[int], attention: bool, batch_norm: bool) -> None:
        super().__init__()
        widths = decoder_widths(encoder_channels)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.gates = nn.ModuleList() if attention else None
        below = int(encoder_channels[-1])
        for level in range(len(widths) - 1, -1, -1):
            w, skip = widths[level], int(encoder_channels[level])
            self.ups.append(nn.ConvTranspose2d(below, w, 2, stride=2))
            if self.gates is not None:
                self.gates.append(AttentionGate(skip, w))
            self.blocks.append(DoubleConv(w + skip, w, batch_norm))
            below = w
        self.out_channels = widths[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[-2::-1]
        for i, skip in enumerate(skips):
            x = self.ups[i](x)
            if self.gates is not None:
                skip = self.gates[i](skip, x)
            x = self.blocks[i](torch.cat([x, skip], dim=1))
        return x


class _UNetBase(nn.Module):
    """Encoder, U-Net decoder and a 1x1 head; ``input_multiple`` is 2 ** depth."""

    def __init__(self, *, in_channels: int, classes: int, encoder_name: str, encoder_depth: int,
                 encoder_weights: str | None, base_channels: int, batch_norm: bool,
                 dropout: float, attention: bool) -> None:
        super().__init__()
        self.encoder = make_encoder(encoder_name, in_channels, encoder_depth, encoder_weights,
                                    base_channels, batch_norm, dropout)
        self.decoder = UNetDecoder(self.encoder.out_channels, attention, batch_norm)
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, classes, 1)
        self.input_multiple = 2 ** encoder_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


class ClassicUNet(_UNetBase):
    """The U-Net of the 2015 paper and of the courses: four poolings, base width 64, no pre-training.

    Parameters
    ----------
    in_channels, classes : int
        Input channels and output channels (logits).
    base_channels : int
        Width of the first level; it doubles at each pooling (64 in the paper).
    encoder_depth : int
        Number of poolings (4 in the paper); the input multiple is ``2 ** encoder_depth``.
    batch_norm : bool
        Batch norm after each convolution.
    dropout : float
        Dropout at the end of the contracting path (the paper used 0.5).
    encoder_name, encoder_weights
        Only ``"plain"`` and None: the classic U-Net has no pre-trained encoder
        (pick ``Unet`` with ``vgg16`` for that).
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, base_channels: int = 64,
                 encoder_depth: int = 4, batch_norm: bool = True, dropout: float = 0.0,
                 encoder_name: str = "plain", encoder_weights: str | None = None) -> None:
        if encoder_name != "plain":
            raise ValueError(f"the classic U-Net has its own plain encoder, not {encoder_name!r}; "
                             "pick the architecture Unet (or AttentionUNet) for an smp encoder")
        super().__init__(in_channels=in_channels, classes=classes, encoder_name="plain",
                         encoder_depth=encoder_depth, encoder_weights=encoder_weights,
                         base_channels=base_channels, batch_norm=batch_norm, dropout=dropout,
                         attention=False)
        self.config = init_config(in_channels=in_channels, classes=classes,
                                  base_channels=base_channels, encoder_depth=encoder_depth,
                                  batch_norm=batch_norm, dropout=dropout, encoder_name="plain")


class AttentionUNet(_UNetBase):
    """U-Net with additive attention gates on every skip connection (Oktay et al. 2018).

    Parameters
    ----------
    in_channels, classes : int
        Input channels and output channels (logits).
    encoder_name : str
        ``"plain"`` (the classic contracting path) or an smp encoder (``vgg16``,
        ``vgg19``, ``resnet50``, ...).
    encoder_depth : int
        Number of downsamplings (4 for plain, 5 for an smp encoder by default).
    encoder_weights : {None, "imagenet"}
        Pre-trained weights of an smp encoder (only when the model is created).
    base_channels : int
        First width of the plain encoder (ignored for an smp encoder).
    batch_norm : bool
        Batch norm in the plain encoder and in the decoder.
    dropout : float
        Dropout at the end of the plain encoder.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, encoder_name: str = "plain",
                 encoder_depth: int | None = None, encoder_weights: str | None = None,
                 base_channels: int = 64, batch_norm: bool = True, dropout: float = 0.0) -> None:
        depth = encoder_depth if encoder_depth is not None else (4 if encoder_name == "plain" else 5)
        super().__init__(in_channels=in_channels, classes=classes, encoder_name=encoder_name,
                         encoder_depth=depth, encoder_weights=encoder_weights,
                         base_channels=base_channels, batch_norm=batch_norm, dropout=dropout,
                         attention=True)
        self.config = init_config(in_channels=in_channels, classes=classes, encoder_name=encoder_name,
                                  encoder_depth=depth, base_channels=base_channels,
                                  batch_norm=batch_norm, dropout=dropout)

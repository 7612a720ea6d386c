"""Hard-parameter-sharing multi-task networks of the AAAI 2022 study: one encoder, one decoder per task.

ResNet encoders are torchvision's ResNets without avgpool/fc (``resnet.py`` rebuilds them without
importing torchvision; trained from scratch unless a local weights file is given); the decoder is the
reference's (taskgrouping / MTRobust ``Decoder``): five stages of [ConvTranspose k2 s2 + BN + ReLU,
Conv3x3 + BN + ReLU] with widths base->256->128->64->48->32, the last Conv3x3 mapping 32 -> C_out with
no BN/activation. ``xception`` is the reference's small Taskonomy Xception
(``xception_taskonomy_small``), written here from its description.

``decoder="skip"`` swaps the reference decoders for U-Net decoders (up-sampling widths 256-128-64-48-32
for ResNets as the reference, 96-64-48-32 for Xception) that also concatenate the encoder's map of each
scale. Why: the reference decoder sees only the stride-32 representation, a 1 x 1 map at 32 px, so small
CPU studies could not beat the constant predictor on segmentation and occlusion edges (measured in
bench/BENCHMARKS.md); at the paper's 256 px keep "reference".

Decoders live in an ``nn.ModuleDict`` keyed by task id (the reference's Xception used a position-keyed
ModuleList, which silently swaps decoders when the task order changes). The model takes x in [0, 1] and
normalises inside (default x * 2 - 1, the paper's [-1, 1] inputs), so attacks work in [0, 1] units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import tasks as T
from .ids import ARCHS

DEFAULT_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # x*2-1: the paper's [-1, 1]
_RESNETS = {"resnet18": 512, "resnet50": 2048, "resnet152": 2048, "wide_resnet50_2": 2048}  # -> channels
INPUT_MULTIPLE = 32  # input height/width must be a multiple of this (total encoder stride)
DECODERS = ("reference", "skip")


# --------------------------------------------------------------------------------------------- ResNet
class ResNetEncoder(nn.Module):
    """torchvision's ResNet up to layer4 (stride 32, ``resnet.ResNetTrunk``); its keys, no ``fc``."""

    def __init__(self, arch: str):
        super().__init__()
        from .resnet import ResNetTrunk

        self.out_channels = _RESNETS[arch]
        c = self.out_channels
        self.skip_channels = (64, c // 8, c // 4, c // 2)  # strides 2, 4, 8, 16
        self.skip_widths = ResNetDecoder.WIDTHS  # up-sampling widths of a skip decoder (as the reference)
        net = ResNetTrunk(arch)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16 and 32 (the last is the representation)."""
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x1))
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        return [x1, x2, x3, x4, self.layer4(x4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]


def _up_stage(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(cin, cout, 2, 2),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SkipDecoder(nn.Module):
    """U-Net decoder: per scale, ConvT k2s2 + BN + ReLU, concatenate the encoder's map of that scale,
    Conv3x3 + BN + ReLU; a bare Conv3x3 to C_out at the end. ``skip_channels`` run shallow to deep."""

    def __init__(self, in_channels: int, skip_channels: Sequence[int], out_channels: int, widths):
        super().__init__()
        if len(widths) != len(skip_channels) + 1:
            raise ValueError(f"{len(widths)} up-sampling stages need {len(widths) - 1} skip maps")
        self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
        cin = in_channels
        for w, skip in zip(widths, [*reversed(skip_channels), 0], strict=True):
            self.up.append(nn.Sequential(nn.ConvTranspose2d(cin, w, 2, 2), nn.BatchNorm2d(w), nn.ReLU(True)))
            self.fuse.append(
                nn.Sequential(nn.Conv2d(w + skip, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True))
            )
            cin = w
        self.out = nn.Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x, skips = feats[-1], feats[-2::-1]
        for i, (up, fuse) in enumerate(zip(self.up, self.fuse, strict=True)):
            x = up(x)
            x = fuse(torch.cat([x, skips[i]], 1) if i < len(skips) else x)
        return self.out(x)


class ResNetDecoder(nn.Sequential):
    """Reference decoder: 5 x (ConvT k2s2 + BN + ReLU, Conv3x3 + BN + ReLU), last conv 32 -> C_out bare."""

    WIDTHS = (256, 128, 64, 48, 32)

    def __init__(self, in_channels: int, out_channels: int):
        layers: list[nn.Module] = []
        cin = in_channels
        for w in self.WIDTHS:
            layers += _up_stage(cin, w)
            cin = w
        layers[-3:] = [nn.Conv2d(cin, out_channels, 3, padding=1)]  # no BN/ReLU after the output conv
        super().__init__(*layers)


# -------------------------------------------------------------------------------------------- Xception
class SeparableConv2d(nn.Module):
    """Depthwise k x k then pointwise 1 x 1, no biases (as the reference)."""

    def __init__(self, cin: int, cout: int, k: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, k, 1, padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """Two [ReLU, SepConv3x3, BN] units (grow first), a strided 2x2 conv if downsampling, a 1x1 skip."""

    def __init__(self, cin: int, cout: int, stride: int = 1, start_with_relu: bool = True):
        super().__init__()
        self.skip = None
        if cin != cout or stride != 1:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        rep: list[nn.Module] = []
        if start_with_relu:
            rep.append(nn.ReLU(inplace=False))  # must not modify the block input used by the skip
        rep += [SeparableConv2d(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        rep += [SeparableConv2d(cout, cout), nn.BatchNorm2d(cout)]
        if stride != 1:
            rep.append(nn.Conv2d(cout, cout, 2, 2))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + (x if self.skip is None else self.skip(x))


class XceptionEncoder(nn.Module):
    """Small Taskonomy Xception: 256 channels at 1/16 resolution."""

    out_channels = 256
    skip_channels = (48, 96, 192)  # strides 2, 4, 8
    skip_widths = (96, 64, 48, 32)  # up-sampling widths of a skip decoder

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 24, 3, 2, 1, bias=False),
            nn.BatchNorm2d(24),
            nn.ReLU(inplace=True),
            nn.Conv2d(24, 48, 3, 1, 1, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            XceptionBlock(48, 96, 2, start_with_relu=False),
            XceptionBlock(96, 192, 2),
            XceptionBlock(192, 512, 2),
            *[XceptionBlock(512, 512) for _ in range(4)],
        )
        self.head = nn.Sequential(SeparableConv2d(512, 256), nn.BatchNorm2d(256), nn.ReLU(inplace=False))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8 and 16 (the last is the representation)."""
        x1 = self.stem(x)
        x2 = self.blocks[0](x1)
        x3 = self.blocks[1](x2)
        return [x1, x2, x3, self.head(self.blocks[2:](x3))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]


class XceptionDecoder(nn.Module):
    """Reference Xception decoder: a 16-channel skip upsampled bilinearly to the input size, concatenated
    with the main path (SepConv 256->96, then 4 x [ConvT k2s2 + BN + ReLU, SepConv + BN + ReLU]),
    then ReLU and a 5x5 SepConv 48 -> C_out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.skip = nn.Sequential(SeparableConv2d(in_channels, 16), nn.BatchNorm2d(16))
        self.main = nn.Sequential(
            SeparableConv2d(in_channels, 96),
            nn.BatchNorm2d(96),
            nn.ConvTranspose2d(96, 96, 2, 2),
            nn.BatchNorm2d(96),
            nn.ReLU(inplace=True),
            SeparableConv2d(96, 64),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 64, 2, 2),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            SeparableConv2d(64, 64, 5, 2),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, 2, 2),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            SeparableConv2d(32, 32, 5, 2),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, 32, 2, 2),
            nn.BatchNorm2d(32),
        )
        self.out = SeparableConv2d(48, out_channels, 5, 2)

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        x = self.main(rep)
        x2 = F.interpolate(self.skip(rep), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(F.relu(torch.cat([x, x2], 1)))


# ------------------------------------------------------------------------------------------ the model
def _reference_init(model: nn.Module) -> None:
    """Reference init: every Conv2d ~ N(0, sqrt(2 / (k*k*out))), BN weight 1 / bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _strip_prefix(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)} if prefix else sd


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict strictly (a torchvision checkpoint's ``fc.*`` head is dropped)."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure is reported with the file name
        raise ValueError(f"cannot read pretrained encoder weights {path}: {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"pretrained weights {path}: expected a state dict, got {type(sd).__name__}")
    if any(k.startswith("encoder.") for k in sd):
        sd = _strip_prefix(sd, "encoder.")
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    try:
        encoder.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"pretrained weights {path} do not fit the encoder: {e}") from e


class MultiTaskNet(nn.Module):
    """Shared encoder + one decoder per task. forward(x [B,3,H,W] in [0,1]) -> {task_id: [B,C,H,W]}."""

    def __init__(
        self,
        arch: str,
        task_ids: Sequence[str],
        pretrained: str | Path | None = None,
        normalization: dict | None = None,
        decoder: str = "reference",
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
        ts = T.parse(list(task_ids))
        self.arch, self.decoder = arch, decoder
        self.task_ids = [t.id for t in ts]
        if arch == "xception":
            self.encoder = XceptionEncoder()
            dec = XceptionDecoder
        else:
            self.encoder = ResNetEncoder(arch)
            dec = ResNetDecoder
        c = self.encoder.out_channels
        if decoder == "skip":
            skips, widths = self.encoder.skip_channels, self.encoder.skip_widths
            self.decoders = nn.ModuleDict({t.id: SkipDecoder(c, skips, t.channels, widths) for t in ts})
        else:
            self.decoders = nn.ModuleDict({t.id: dec(c, t.channels) for t in ts})
        _reference_init(self)
        if pretrained is not None:
            load_encoder_weights(self.encoder, pretrained)
        norm = normalization or DEFAULT_NORMALIZATION
        self.normalization = {
            "mean": [float(v) for v in norm["mean"]],
            "std": [float(v) for v in norm["std"]],
        }
        if len(self.normalization["mean"]) != 3 or len(self.normalization["std"]) != 3:
            raise ValueError(f"normalization needs 3 means and 3 stds, got {norm}")
        self.register_buffer("input_mean", torch.tensor(self.normalization["mean"]).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(self.normalization["std"]).view(1, 3, 1, 1))

    def output_layer(self, task_id: str) -> nn.Conv2d:
        """The last convolution of a task's decoder (its prediction layer)."""
        dec = self.decoders[task_id]
        if isinstance(dec, SkipDecoder):
            return dec.out
        return dec.out.pointwise if isinstance(dec, XceptionDecoder) else dec[-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if x.dim() != 4 or x.shape[1] != 3 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
            raise ValueError(
                f"{self.arch}: input must be [B, 3, H, W] with H, W multiples of {INPUT_MULTIPLE}, "
                f"got {tuple(x.shape)}"
            )
        feats = self.encoder.stages((x - self.input_mean) / self.input_std)
        rep = feats if self.decoder == "skip" else feats[-1]
        return {tid: self.decoders[tid](rep) for tid in self.task_ids}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable weights (the supplementary's "Size")."""
    return sum(p.numel() for p in model.parameters())

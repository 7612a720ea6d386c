"""torchvision's ResNets (v1.5: stride in the 3x3 convolution) rebuilt without importing torchvision.

Why: ``import torchvision`` imports all of its models and ops, which pull in ``torch._dynamo`` (about 2
CPU-seconds), and every training and evaluation job paid for it. The module tree, the state-dict keys
and the random initialisation (the same random draws in the same order, the ImageNet head included) are
those of ``torchvision.models.resnet*(weights=None)``; tests/test_models.py checks the weights are equal.
"""

from __future__ import annotations

import torch.nn as nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample=None, base_width: int = 64):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample=None, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


# arch -> (block, blocks per stage, width per group)
SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 64),
    "resnet152": (Bottleneck, (3, 8, 36, 3), 64),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 128),
}


class ResNetTrunk(nn.Module):
    """conv1, bn1, relu, maxpool and layer1-4 of torchvision's ``arch`` (no avgpool / fc)."""

    def __init__(self, arch: str):
        super().__init__()
        block, layers, self.base_width = SPECS[arch]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        nn.Linear(512 * block.expansion, 1000)  # torchvision's ImageNet head: only its random draws
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

"""Small CNNs for the concept world (112 x 112 images) that play the roles of the paper's
networks in Fig. 9, each ending in global average pooling + one linear layer so that IBD's
decomposition applies exactly (logit_k = w_k . GAP(A) + b_k, A the feature layer).

- `world_resnet` (role of ResNet50, the reference): residual BasicBlocks with batch norm from
  torchvision; feature layer `layer4`, 128 x 7 x 7.
- `world_vgg` (role of VGG16): a plain 3x3 conv stack without batch norm, like VGG; feature
  layer `features`, 96 x 14 x 14.
- `world_alexnet` (role of AlexNet): a large-stride 7x7 first layer and three more convs, no
  batch norm; feature layer `features`, 64 x 14 x 14.

The mirrored reference (`world_resnet_mirror`, the paper's resnet50*) is `world_resnet` with
every kernel flipped (`ibd.nets.mirror`), saved as its own checkpoint.

- `world_vit` (a vision transformer, a family the paper predates): torchvision's
  `VisionTransformer` with a convolutional stem (four stride-2 3x3 convs; Xiao et al. 2021,
  "Early convolutions help transformers see better", found that such a stem trains more stably
  and to a higher accuracy than a patchify one, which matters with a few thousand images)
  giving 7 x 7 patch tokens and a class token, then transformer blocks and the final layer norm.
  Its head reads the mean of the *patch* tokens after that norm (the class token stays in the
  sequence, where it only serves as a register that attention can use), so its logits are
  `w_k . GAP(A) + b_k` with A the final norm's output `encoder.ln` seen as a D x 7 x 7 map once
  the class token is dropped: CAM and IBD apply exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

from ibd.nets.architectures import ArchSpec

WORLD_INPUT = (112, 112)


class GapClassifier(nn.Module):
    """`features` -> global average pooling -> `fc` (the CAM / IBD form)."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class WorldResNet(nn.Module):
    """conv 3x3/2 -> max-pool/2 -> four BasicBlocks (32, 64/2, 128/2, 128) -> GAP -> fc."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int] = (32, 64, 128, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._block(widths[0], widths[0], 1)
        self.layer2 = self._block(widths[0], widths[1], 2)
        self.layer3 = self._block(widths[1], widths[2], 2)
        self.layer4 = self._block(widths[2], widths[3], 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            # zero-init the last BN of each block: each block starts as the identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _block(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def world_resnet(num_classes: int) -> nn.Module:
    return WorldResNet(num_classes)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.ReLU(inplace=True)]


def world_vgg(num_classes: int) -> nn.Module:
    """conv/2 24, conv 24, pool, conv 48 x2, pool, conv 96 x2 (14 x 14) -> GAP -> fc."""
    features = nn.Sequential(
        *_conv(3, 24, stride=2),
        *_conv(24, 24),
        nn.MaxPool2d(2),
        *_conv(24, 48),
        *_conv(48, 48),
        nn.MaxPool2d(2),
        *_conv(48, 96),
        *_conv(96, 96),
    )
    return GapClassifier(features, 96, num_classes)


def world_alexnet(num_classes: int) -> nn.Module:
    """conv 7x7/4 32, pool/2, conv 5x5 64, conv 3x3 96, conv 3x3 64 (14 x 14) -> GAP -> fc."""
    features = nn.Sequential(
        *_conv(3, 32, kernel=7, stride=4),
        nn.MaxPool2d(3, 2, 1),
        *_conv(32, 64, kernel=5),
        *_conv(64, 96),
        *_conv(96, 64),
    )
    return GapClassifier(features, 64, num_classes)


class WorldViT(VisionTransformer):
    """torchvision's ViT with a conv stem whose head is linear in the mean of the patch tokens
    after the final norm (`encoder.ln`), instead of reading the class token."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._process_input(x)
        cls = self.class_token.expand(tokens.shape[0], -1, -1)
        tokens = self.encoder(torch.cat([cls, tokens], dim=1))  # N x (1 + 49) x D, cls first
        return self.heads(tokens[:, 1:].mean(dim=1))


VIT_STEM = (24, 48, 96, 128)  # stride 2 each: 112 -> 7 (a 16-pixel "patch")
VIT_WIDTH, VIT_DEPTH, VIT_HEADS, VIT_MLP = 128, 4, 4, 256


def world_vit(num_classes: int) -> nn.Module:
    """conv stem 24/2, 48/2, 96/2, 128/2 -> 1x1 to 128 -> 49 patch tokens + class token ->
    4 blocks (4 heads, MLP 256) -> layer norm -> mean of the patch tokens -> fc."""
    return WorldViT(
        image_size=WORLD_INPUT[0],
        patch_size=2 ** len(VIT_STEM),
        num_layers=VIT_DEPTH,
        num_heads=VIT_HEADS,
        hidden_dim=VIT_WIDTH,
        mlp_dim=VIT_MLP,
        num_classes=num_classes,
        conv_stem_configs=[ConvStemConfig(width, 3, 2) for width in VIT_STEM],
    )


SPECS = [
    ArchSpec(
        "world_resnet",
        world_resnet,
        "layer4",
        WORLD_INPUT,
        description="concept world reference (ResNet50's role): BasicBlocks, 128x7x7",
    ),
    ArchSpec(
        "world_vgg",
        world_vgg,
        "features",
        WORLD_INPUT,
        description="concept world VGG16 role: plain conv stack, 96x14x14",
    ),
    ArchSpec(
        "world_alexnet",
        world_alexnet,
        "features",
        WORLD_INPUT,
        description="concept world AlexNet role: stride-4 7x7 conv + 3 convs, 64x14x14",
    ),
    ArchSpec(
        "world_vit",
        world_vit,
        "encoder.ln",
        WORLD_INPUT,
        description="concept world vision transformer: conv stem, 4 blocks, 7x7 tokens of 128",
    ),
]

"""Peer backbones for the backbone benchmark, from whichever libraries are installed: torchvision's
always (a dependency), mmpretrain's where it imports. Each returns its four stage outputs."""
from typing import Callable, Dict, Sequence, Tuple

from torch import Tensor, nn


class StageOutputs(nn.Module):
    """A torchvision classifier's trunk run stage by stage: the outputs after ``taps`` of ``stages``."""

    def __init__(self, stages: Sequence[nn.Module], taps: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.taps = set(taps)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                outs.append(x)
        return tuple(outs)


def _torchvision() -> Dict[str, Callable[[], nn.Module]]:
    from torchvision import models as tv

    def resnet50() -> nn.Module:
        m = tv.resnet50()
        return StageOutputs([nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool), m.layer1, m.layer2, m.layer3, m.layer4],
                            taps=(1, 2, 3, 4))

    return {
        'ResNet-50 (torchvision)': resnet50,
        'Swin-T (torchvision)': lambda: StageOutputs(list(tv.swin_t().features), taps=(1, 3, 5, 7)),
        'ConvNeXt-T (torchvision)': lambda: StageOutputs(list(tv.convnext_tiny().features), taps=(1, 3, 5, 7))
    }


def _mmpretrain() -> Dict[str, Callable[[], nn.Module]]:
    try:
        from mmpretrain.models.backbones import ConvNeXt, ResNet, SwinTransformer

        import mavit_mm.classification  # noqa: F401  (mmpretrain.models beside transformers 5)
    except Exception:  # noqa: BLE001  (not installed or broken: its peers are just not offered)
        return {}
    return {
        'Swin-T (mmpretrain)': lambda: SwinTransformer(arch='tiny', out_indices=(0, 1, 2, 3), pad_small_map=True),
        'ConvNeXt-T (mmpretrain)': lambda: ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False),
        'ResNet-50 (mmpretrain)': lambda: ResNet(depth=50, out_indices=(0, 1, 2, 3))
    }


def available_peers() -> Dict[str, Callable[[], nn.Module]]:
    """Name -> constructor of every peer the installed libraries provide."""
    return {**_torchvision(), **_mmpretrain()}

"""mmpretrain's VisionTransformer (DeiT) and SwinTransformer with every softmax attention made MALA.

Registered in mmpretrain's MODELS; the stock classes build everything, then each attention module
is converted in place, so every other layer, argument and checkpoint key stays the stock one.
"""
from mmpretrain.models.backbones import SwinTransformer, VisionTransformer
from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA
from mmpretrain.registry import MODELS

from .attention import MALAMultiheadAttention, WindowMALA


@MODELS.register_module()
class MALAVisionTransformer(VisionTransformer):
    """``VisionTransformer`` (ViT / DeiT archs) whose attention layers compute MALA."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for module in list(self.modules()):
            if type(module) is MultiheadAttention:
                MALAMultiheadAttention.convert(module)


@MODELS.register_module()
class MALASwinTransformer(SwinTransformer):
    """``SwinTransformer`` whose (shifted) window attentions compute MALA."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for module in list(self.modules()):
            if type(module) is WindowMSA:
                WindowMALA.convert(module)

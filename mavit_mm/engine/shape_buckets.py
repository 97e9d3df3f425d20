"""Pad each training batch up to a multiple of a coarse size, so that COCO's batches take a few shapes.

mmdet pads a batch to a multiple of 32: with COCO's keep-ratio resize to 1333 x 800 that gives a few dozen
padded shapes in a few hundred iterations (``tools/analysis_tools/batch_shapes.py`` counts them for a config;
docs/speed.md), and each new shape costs a step that plans and allocates per size, and with training graphs
(:class:`~mavit_mm.engine.cuda_graphs.CUDAGraphHook`) a capture; shapes beyond ``max_graphs`` run eagerly.
:class:`BatchShapeBucketPad`, a batch augment of mmdet's ``DetDataPreprocessor``, pads further, to a multiple
of ``size_divisor`` per side (160 keeps COCO's 800-pixel side as it is), with mmdet's own
:class:`BatchFixedSizePad` doing the padding (images, and instance masks with ``pad_mask=True``).

This changes what the backbone computes, which is why no config uses it unless it opts in. MALA's
attention averages over every token of the map, the padded ones included, so the extra zeros change the
features at the real pixels too (measured in docs/speed.md); softmax windows and convolutions near the
border see them as well. Training only: mmdet applies batch augments to training batches, so tests and
inference keep their padding to 32 (where ``DetDataPreprocessor(pad_size_divisor=160)`` would pad them too).
"""
import math
from typing import List, Optional, Tuple

from mmengine.registry import MODELS
from torch import Tensor, nn


def bucket_shape(height: int, width: int, size_divisor: int) -> Tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``size_divisor``."""
    return (math.ceil(height / size_divisor) * size_divisor, math.ceil(width / size_divisor) * size_divisor)


@MODELS.register_module()
class BatchShapeBucketPad(nn.Module):
    """Pad a training batch of shape ``(N, C, H, W)`` to ``bucket_shape(H, W, size_divisor)``, its samples'
    ``batch_input_shape`` / ``pad_shape`` (and instance masks, with ``pad_mask=True``) with it.

    Use in an mmdet config::

        model = dict(data_preprocessor=dict(
            batch_augments=[dict(type='BatchShapeBucketPad', size_divisor=160, pad_mask=True)]))

    Args:
        size_divisor (int): Each padded side is a multiple of it. Defaults to 160.
        pad_mask (bool): Pad the instance masks too (Mask R-CNN). Defaults to False.
        img_pad_value (int): Value of the padded pixels, after normalisation (as mmdet's padding to 32).
            Defaults to 0.
        mask_pad_value (int): Value of the padded mask pixels. Defaults to 0.
    """

    def __init__(self,
                 size_divisor: int = 160,
                 pad_mask: bool = False,
                 img_pad_value: int = 0,
                 mask_pad_value: int = 0) -> None:
        super().__init__()
        if not isinstance(size_divisor, int) or size_divisor < 1:
            raise ValueError(f'BatchShapeBucketPad: size_divisor must be a positive int, got {size_divisor!r}')
        from mmdet.models.data_preprocessors import BatchFixedSizePad
        self.size_divisor = size_divisor
        self.pad = BatchFixedSizePad(
            size=(size_divisor, size_divisor),
            img_pad_value=img_pad_value,
            pad_mask=pad_mask,
            mask_pad_value=mask_pad_value)

    def forward(self, inputs: Tensor, data_samples: Optional[List] = None) -> Tuple[Tensor, Optional[List]]:
        self.pad.size = bucket_shape(inputs.shape[-2], inputs.shape[-1], self.size_divisor)
        return self.pad(inputs, data_samples)


__all__ = ['BatchShapeBucketPad', 'bucket_shape']

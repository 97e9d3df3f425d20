"""A segmentor's or detector's neck and head convolutions in size buckets: :class:`ConvSizeBucketsHook`.

cuDNN plans a convolution anew for every input size it has not seen, and the neck and dense heads of any
segmentor or detector, whatever its backbone, run 10-60 convolutions per step. :class:`SizeBucketConv2d`
computes a convolution on its input zero-padded at the bottom and right to one of four sizes per octave and
crops the output back (:func:`mavit_mm.ops.conv.conv2d_in_size_buckets`, the function the MAViT stem uses):
the same values and gradients, for a few cuDNN plans per octave instead of one per size.

The trade: a new size costs far less, a size seen before a little more (the padding's extra pixels and
copies). ``benchmark.py shapes --tables necks`` measures both for mmdet's FPN and RPN head (docs/speed.md):
on an H100, 91 ms against 205 ms per step over a sequence of new sizes, 14.2 ms against 9.0 ms at a size
seen before. So it pays where sizes rarely repeat, such as ADE20K's whole-image test (the long side varies
by the pixel; the shipped segmentation configs opt in, and their 512x512 training crops are bucket sizes
already), and costs in a long COCO training run, whose few dozen padded batch sizes are all seen within its
first few hundred iterations (the detection configs leave it off).

``custom_hooks = [dict(type='ConvSizeBucketsHook')]`` switches the plain ``nn.Conv2d`` modules of the named
children of the model when a train, val or test run starts on CUDA.
"""
from typing import List, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

from ..ops.conv import conv2d_in_size_buckets

#: Inputs with a side under this many pixels (the smallest bucket step) are not padded.
MIN_SIDE = 8

#: The children of mmdet's detectors and mmseg's segmentors whose convolutions see the batch's image size
#: (an RoI head's convolutions see fixed-size RoIs, a backbone has its own choice).
BUCKETED_CHILDREN = ('neck', 'rpn_head', 'bbox_head', 'decode_head', 'auxiliary_head')


class SizeBucketConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (zero padding, no dilation, one group) computed in size buckets: input
    ``(B, C_in, H, W)`` (H, W >= :data:`MIN_SIDE`) zero-padded at the bottom and right to
    ``size_bucket(H) x size_bucket(W)``, output cropped back to ``(B, C_out, H_out, W_out)``. The same
    parameters, buffers and state-dict keys as the ``nn.Conv2d`` it is made from by
    :func:`use_conv_size_buckets`. Not inside a ``torch.compile`` trace, whose symbolic sizes the buckets'
    integer arithmetic does not take."""

    def forward(self, x: Tensor) -> Tensor:
        # maps under one bucket step (an UperNet's pooled 1x1 - 6x6 maps) keep their size: padding them
        # would multiply their work, and their few sizes repeat anyway
        if x.dim() != 4 or min(x.shape[-2:]) < MIN_SIDE or torch.compiler.is_compiling():
            return super().forward(x)
        return conv2d_in_size_buckets(x, self.weight, self.bias, self.stride, self.padding)


def bucketable(module: nn.Module) -> bool:
    """Whether ``module`` is a plain ``nn.Conv2d`` that :class:`SizeBucketConv2d` computes the same way."""
    return (type(module) is nn.Conv2d and module.padding_mode == 'zeros' and module.groups == 1
            and module.dilation == (1, 1) and not isinstance(module.padding, str))


def use_conv_size_buckets(model: nn.Module, children: Sequence[str] = BUCKETED_CHILDREN) -> List[str]:
    """Make every :func:`bucketable` convolution inside ``model``'s children named in ``children`` (those
    it has) a :class:`SizeBucketConv2d`, in place: only its class changes, so the optimizer, hooks and
    checkpoints keep the same parameters. Returns the qualified names of the switched convolutions."""
    switched = []
    for child in children:
        sub = getattr(model, child, None)
        if not isinstance(sub, nn.Module):
            continue
        for name, module in sub.named_modules():
            if bucketable(module):
                module.__class__ = SizeBucketConv2d
                switched.append(f'{child}.{name}')
    return switched


@HOOKS.register_module()
class ConvSizeBucketsHook(Hook):
    """Put the model's neck and head convolutions in size buckets (:func:`use_conv_size_buckets`) when a
    train, val or test run starts on CUDA; on the CPU, where no convolution is planned per size, nothing.

    Args:
        children (Sequence[str]): Names of the model's children whose convolutions to switch; those the
            model lacks are skipped. Defaults to :data:`BUCKETED_CHILDREN`.
    """

    priority = 'LOW'

    def __init__(self, children: Sequence[str] = BUCKETED_CHILDREN) -> None:
        self.children = tuple(children)

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not any(p.is_cuda for p in model.parameters()):
            return
        switched = use_conv_size_buckets(model, self.children)
        if switched:
            runner.logger.info(f'ConvSizeBucketsHook: {len(switched)} convolutions of '
                               f'{sorted({n.split(".")[0] for n in switched})} in size buckets')

"""MAViT backbones, segmentors and detectors to ONNX, through torch's TorchScript-based exporter
(``dynamo=False``).

The export runs MALA's plain PyTorch form (``fast_path='off'``: the Triton kernels are CUDA code an ONNX
graph cannot hold) in fp32. Outputs:

- ``backbone``: one feature map per ``out_indices`` entry, named ``feat0``, ``feat1``, ...
- ``segmentor`` (mmseg ``EncoderDecoder``: SemFPN, UperNet): ``logits`` ``(B, classes, H, W)``, the decode
  head's output resized to the input (bilinear, as mmseg's inference), before softmax / argmax; the input
  is the normalised image (the data preprocessor's mean / std and BGR->RGB are not in the graph).
- ``detector`` (mmdet RetinaNet, Faster / Mask R-CNN; one image): ``boxes``, ``scores``, ``labels`` and, for
  Mask R-CNN, ``masks``, with NMS in the graph (:mod:`mavit_mm.deployment.detectors`).

With ``dynamic=True`` (backbone only) the batch, height and width axes are dynamic. Segmentors and detectors
export at a fixed size (the detectors' anchors are constants of the graph; the number of detections is a
dynamic axis): mmseg's heads turn feature sizes into Python ints (``resize``), which the tracer writes into the
graph as constants, and UperNet's pyramid pooling (``AdaptiveAvgPool2d`` to 1, 2, 3, 6) has no ONNX operator
for sizes that are not multiples of its bins; here it is exported as the same averages written as two
matrix products, exact at the export size.
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPSET = 17


class MatmulAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d`` as ``P_h x P_w^T`` with PyTorch's bins (start ``floor(i n / s)``, end
    ``ceil((i + 1) n / s)``): the same numbers, in operators ONNX has, for the traced input size."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    @staticmethod
    def _bins(n: int, s: int, like: Tensor) -> Tensor:
        weights = torch.zeros(s, n, dtype=like.dtype, device=like.device)
        for i in range(s):
            start, end = (i * n) // s, -((-(i + 1) * n) // s)
            weights[i, start:end] = 1.0 / (end - start)
        return weights

    def forward(self, x: Tensor) -> Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        sh, sw = [
            h if self.output_size[0] is None else self.output_size[0],
            w if self.output_size[1] is None else self.output_size[1]
        ]
        return self._bins(h, sh, x) @ x @ self._bins(w, sw, x).transpose(0, 1)


def _replace_adaptive_pools(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, MatmulAdaptiveAvgPool2d(child.output_size))
        else:
            _replace_adaptive_pools(child)


class _Segmentor(nn.Module):
    """An mmseg segmentor as ``image (B, 3, H, W) -> logits (B, classes, H, W)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model.decode_head(self.model.extract_feat(x))
        return F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)


def _plain_mavit(model: nn.Module) -> None:
    """Switch every MAViT inside ``model`` to its plain PyTorch path."""
    from mavit_mm.models.backbones.mavit import MAViT
    for m in model.modules():
        if isinstance(m, MAViT):
            m.set_fast_path('off')


def exportable_module(model: nn.Module, for_export: bool = True) -> Tuple[nn.Module, str]:
    """``(module, kind)``: what the exporter traces for a built model (a MAViT backbone or an mmseg
    segmentor; changed in place) and its kind; anything else raises ``TypeError`` naming what is
    supported. ``for_export=False`` keeps the model's own pooling layers (the PyTorch reference)."""
    from mavit_mm.models.backbones.mavit import MAViT
    _plain_mavit(model)
    model.eval()
    if isinstance(model, MAViT):
        return model, 'backbone'
    if hasattr(model, 'decode_head') and hasattr(model, 'extract_feat'):
        if for_export:
            _replace_adaptive_pools(model)
        return _Segmentor(model).eval(), 'segmentor'
    if hasattr(model, 'bbox_head') or hasattr(model, 'roi_head'):
        from .detectors import detector_export_module
        return detector_export_module(model).eval(), 'detector'
    raise TypeError(f'cannot export a {type(model).__name__}: supported are the MAViT backbone, mmseg '
                    'segmentors (EncoderDecoder: SemFPN, UperNet) and mmdet detectors (RetinaNet, Faster / '
                    'Mask R-CNN)')


def output_names(module: nn.Module, kind: str, example: Tensor) -> List[str]:
    if kind == 'segmentor':
        return ['logits']
    if kind == 'detector':
        return list(module.output_names)
    with torch.no_grad():
        outs = module(example)
    return [f'feat{i}' for i in range(len(outs))]


def export_onnx(model: nn.Module,
                path: str,
                shape: Sequence[int],
                dynamic: bool = False,
                batch_size: int = 1,
                opset: int = OPSET) -> dict:
    """Export ``model`` to ``path`` (written to a temporary name, then renamed). Returns a summary:
    ``kind``, ``inputs``, ``outputs``, ``opset``, ``dynamic``."""
    from mavit_mm.utils.fileio import atomic_write
    module, kind = exportable_module(model)
    if dynamic and kind != 'backbone':
        raise ValueError('dynamic axes are supported for the backbone only (mmseg heads and mmdet anchors turn '
                         f'feature sizes into constants): export a {kind} once per input size, without --dynamic')
    if kind == 'detector' and batch_size != 1:
        raise ValueError(f'detectors export for one image at a time, got batch size {batch_size}')
    example = torch.randn(batch_size, 3, *shape)
    outputs = output_names(module, kind, example)
    axes: Optional[dict] = None
    if dynamic:
        axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
        axes.update({name: {0: 'batch', 2: f'{name}_height', 3: f'{name}_width'} for name in outputs})
    if kind == 'detector':  # the number of detections depends on the image
        axes = {name: {0: 'detections'} for name in outputs}
    with atomic_write(path) as f, torch.no_grad():
        torch.onnx.export(
            module, (example, ),
            f,
            input_names=['input'],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True)
    return dict(
        kind=kind,
        path=osp.abspath(path),
        inputs=['input'],
        outputs=outputs,
        opset=opset,
        dynamic=dynamic,
        shape=[batch_size, 3, *shape])

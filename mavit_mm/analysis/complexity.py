"""Params and FLOPs of a built OpenMMLab model, in the paper's convention and in a full count.

Two maintained counters, configured here rather than re-implemented:

* **paper** -- ptflops' module-hook backend with functional counting off: convolution and linear
  multiply-accumulates plus one per output element for a bias, two per element for
  BatchNorm / LayerNorm / GroupNorm (ptflops gives LayerNorm only one; we hand it its own hook),
  one per element for activations and pooling modules. Attention products, ELU, rotary and other
  functional ops are not counted: the mmcv 1.x ``get_flops`` convention of the paper's tables.
* **full** -- :class:`mmengine.analysis.FlopAnalyzer` (fvcore's jit-traced op counter): every
  matmul, so the attention products too (one multiply-accumulate = one FLOP, fvcore's unit);
  the fused ``scaled_dot_product_attention`` op gets a handle since fvcore predates it.

Models are called the way OpenMMLab's own ``get_flops`` tools call them: ``mode='tensor'``
(raw head outputs). Two-stage detectors get 1000 fixed proposals and their mask heads see the
first 100 RoIs, as ``forward_dummy`` of mmdet 2.x (the paper's tooling) did, so the RoI heads' cost
does not depend on what an untrained RPN proposes. (mmdet 3.x's Cascade R-CNN runs its three mask
heads on all 1000 RoIs in ``mode='tensor'``, which would triple the count.)
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

NUM_DUMMY_PROPOSALS = 1000
# The paper's input (H, W) per task: detection 1280x800 (landscape here), segmentation 512x2048, ImageNet 224.
PAPER_SHAPES: Dict[str, Tuple[int, int]] = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}
NUM_DUMMY_MASK_ROIS = 100


class TensorForward(nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a one-tensor module (what counters need)."""

    def __init__(self, model: nn.Module, data_samples: Optional[List[Any]] = None) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: Tensor) -> Any:
        return self.model(inputs, self.data_samples, mode='tensor')


def dummy_data_samples(scope: str, shape: Tuple[int, int], with_proposals: bool) -> Optional[list]:
    """Data samples for one ``(H, W)`` image: metainfo for mmdet / mmseg heads, proposals for RoI heads."""
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        sample = DetDataSample(metainfo=meta)
        if with_proposals:
            g = torch.Generator().manual_seed(0)
            xy = torch.rand(NUM_DUMMY_PROPOSALS, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
            wh = torch.rand(NUM_DUMMY_PROPOSALS, 2, generator=g) * torch.tensor([w * 0.2, h * 0.2]) + 8
            sample.proposals = InstanceData(
                bboxes=torch.cat([xy, xy + wh], dim=1), scores=torch.rand(NUM_DUMMY_PROPOSALS, generator=g))
        return [sample]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta)]
    return None


class _MaskHeadsOn100RoIs:
    """Hooks that run every mask head on the first 100 RoIs only, as mmdet 2.x ``forward_dummy`` did.

    The extractor's pre-hook cuts the RoIs; the mask head's hook pads its output back with zeros to
    the RoI count the rest of the head expects (padding is not an operation either counter counts).
    """

    def __init__(self, model: nn.Module) -> None:
        from mmdet.models.roi_heads.mask_heads import FCNMaskHead
        from mmdet.models.roi_heads.roi_extractors import BaseRoIExtractor
        self.cut_from: List[int] = []
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, BaseRoIExtractor) and 'mask_roi_extractor' in name:
                self.handles.append(m.register_forward_pre_hook(self._cut))
            elif isinstance(m, FCNMaskHead):
                self.handles.append(m.register_forward_hook(self._pad))

    def _cut(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        feats, rois, *rest = args
        self.cut_from.append(len(rois))
        return (feats, rois[:NUM_DUMMY_MASK_ROIS], *rest)

    def _pad(self, module: nn.Module, args: Tuple[Any, ...], out: Tensor) -> Tensor:
        n = self.cut_from.pop() if self.cut_from else len(out)
        return torch.cat([out, out.new_zeros(n - len(out), *out.shape[1:])]) if n > len(out) else out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _norm_hook(module: nn.Module, inputs: Tuple[Tensor, ...], output: Tensor) -> None:
    """Normalise + scale/shift: two operations per element (one without affine parameters)."""
    affine = getattr(module, 'elementwise_affine', None)
    if affine is None:  # LayerNorm2d keeps its parameters in a child nn.LayerNorm
        affine = getattr(getattr(module, 'norm', None), 'elementwise_affine', False)
    module.__flops__ += int(np.prod(inputs[0].shape, dtype=np.int64)) * (2 if affine else 1)


def paper_flops(model: nn.Module, inputs: Tensor) -> int:
    """FLOPs of ``model(inputs)`` counting module operations only (the paper's convention)."""
    from ptflops import get_model_complexity_info

    from mavit_mm.models.layers.block import LayerNorm2d
    flops, _ = get_model_complexity_info(
        model,
        tuple(inputs.shape[1:]),
        input_constructor=lambda _: {'inputs': inputs},
        as_strings=False,
        print_per_layer_stat=False,
        backend='pytorch',
        backend_specific_config={'count_functional': False},
        custom_modules_hooks={
            nn.LayerNorm: _norm_hook,
            LayerNorm2d: _norm_hook
        })
    return int(flops)


def _sdpa_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """``q k^T`` and ``attn v`` of ``scaled_dot_product_attention``: ``2 * B * heads * Nq * Nk * d``."""
    from mmengine.analysis.jit_handles import get_shape
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    return 2 * int(np.prod(q)) * k[-2]


def full_flops(model: nn.Module, inputs: Tensor) -> int:
    """FLOPs of ``model(inputs)`` counting every traced op fvcore knows, attention products included."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, (inputs, ))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_flop_handle)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return int(analyzer.total())


def count_params(model: nn.Module) -> int:
    """All parameters of the model (auxiliary heads included, as the paper's tables)."""
    return sum(p.numel() for p in model.parameters())


def model_complexity(model: nn.Module, scope: str, shape: Sequence[int], full: bool = True) -> Dict[str, Any]:
    """Params and FLOPs of a built OpenMMLab model (mmdet / mmseg / mmpretrain) at ``(H, W)``.

    Returns:
        dict: ``params``, ``flops_paper``, ``flops_full`` (None if ``full`` is False) and ``shape``.
    """
    h, w = int(shape[0]), int(shape[1])
    model = model.eval()
    two_stage = scope == 'mmdet' and getattr(model, 'with_rpn', False)
    wrapped = TensorForward(model, dummy_data_samples(scope, (h, w), two_stage)).eval()
    inputs = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    hooks = _MaskHeadsOn100RoIs(model) if two_stage else None
    try:
        with torch.no_grad():
            paper = paper_flops(wrapped, inputs)
            total = full_flops(wrapped, inputs) if full else None
    finally:
        if hooks is not None:
            hooks.remove()
    return dict(shape=[h, w], params=count_params(model), flops_paper=paper, flops_full=total)

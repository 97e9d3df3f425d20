"""mmdet detectors as ONNX-traceable modules: image in, detections out, NMS inside the graph.

mmdet's own ``predict`` turns tensor sizes into Python numbers and branches on data (``if inds.numel()``),
which a trace freezes at the values it saw. These wrappers compute the same post-processing as mmdet 3.3's
``predict(..., rescale=False)`` for one image at a fixed input size, with operators the TorchScript-based
exporter writes as ONNX: the heads, prior generators and box coders are mmdet's own modules; the
selection steps are written as top-k / masks / ``torchvision.ops.batched_nms`` (ONNX ``NonMaxSuppression``)
and RoI pooling as ``torchvision.ops.roi_align`` (ONNX ``RoiAlign``), both the operations mmcv's ops
compute.

Outputs, for an input ``(1, 3, H, W)`` (the normalised image; boxes in its pixel coordinates):

- ``boxes`` ``(N, 4)`` x1, y1, x2, y2; ``scores`` ``(N,)``; ``labels`` ``(N,)`` int64, N <= ``max_per_img``,
  by descending score;
- Mask R-CNN also ``masks`` ``(N, H, W)``: each instance's mask probability pasted into the image
  (``masks >= mask_thr_binary``, 0.5 in the configs, gives mmdet's boolean masks).
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, roi_align


def _flatten_level(x: Tensor, channels: int) -> Tensor:
    """``(1, A * channels, h, w)`` head output -> ``(h * w * A, channels)`` in mmdet's prior order."""
    return x[0].permute(1, 2, 0).reshape(-1, channels)


def _nms(boxes: Tensor, scores: Tensor, idxs: Tensor, nms_cfg: Dict, max_num: int) -> Tensor:
    """Indices kept by class-wise (``idxs``-wise) NMS, best first, at most ``max_num`` (``max_num <= 0``:
    all), as mmcv's ``batched_nms`` with ``class_agnostic=False``."""
    if nms_cfg.get('type', 'nms') != 'nms':
        raise ValueError(f"only plain NMS exports (nms=dict(type='nms')), the config asks for {nms_cfg['type']}")
    keep = batched_nms(boxes, scores, idxs, float(nms_cfg['iou_threshold']))
    return keep[:max_num] if max_num > 0 else keep


def _decode(coder, priors: Tensor, deltas: Tensor, image_hw) -> Tensor:
    """``DeltaXYWHBBoxCoder.decode`` for one image, clipped to the image. Inside an ONNX export mmdet 3.3's
    coder takes a branch of its 2.x layout (``mmdet.core.export``, gone); the decoding and the clipping
    are the same formulas here, without that branch."""
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
    boxes = delta2bbox(
        priors,
        deltas,
        coder.means,
        coder.stds,
        clip_border=False,
        add_ctr_clamp=coder.add_ctr_clamp,
        ctr_clamp=coder.ctr_clamp)
    if coder.clip_border:
        h, w = image_hw
        boxes = torch.stack(
            [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
    return boxes


def _check_coders(*heads: nn.Module) -> None:
    for head in heads:
        if type(head.bbox_coder).__name__ != 'DeltaXYWHBBoxCoder':
            raise TypeError(f'{type(head).__name__} decodes with {type(head.bbox_coder).__name__}: only '
                            'DeltaXYWHBBoxCoder boxes export')


def _size_filter(boxes: Tensor, min_size: float) -> Tensor:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return (w > min_size) & (h > min_size)


class SingleStageExport(nn.Module):
    """RetinaNet-style detectors (anchor-based dense head with sigmoid classification, no score
    factors) as ``image -> boxes, scores, labels``."""

    output_names = ('boxes', 'scores', 'labels')

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        head = model.bbox_head
        # heads with score factors (FCOS / ATSS centerness) or other decoders compute something else
        if type(head).__name__ not in ('RetinaHead', 'RetinaSepBNHead') or not head.use_sigmoid_cls:
            raise TypeError(f'{type(head).__name__}: only RetinaNet heads (RetinaHead, RetinaSepBNHead with sigmoid '
                            'scores) export among single-stage detectors')
        _check_coders(head)
        self.model = model
        self.cfg = head.test_cfg

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        head, cfg = self.model.bbox_head, self.cfg
        cls_scores, bbox_preds = head(self.model.extract_feat(x))
        priors = head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores], device=x.device)
        num_classes, nms_pre = head.cls_out_channels, cfg.get('nms_pre', -1)
        boxes, scores, labels = [], [], []
        for cls, reg, anchors in zip(cls_scores, bbox_preds, priors):
            prob = _flatten_level(cls, num_classes).sigmoid().reshape(-1)
            # mmdet keeps the nms_pre best (anchor, class) pairs above score_thr: the same set as the top
            # nms_pre pairs, then the threshold
            k = prob.shape[0] if nms_pre <= 0 else min(nms_pre, prob.shape[0])
            top, idx = prob.topk(k)
            anchor_idx = torch.div(idx, num_classes, rounding_mode='floor')
            deltas = _flatten_level(reg, head.bbox_coder.encode_size)[anchor_idx]
            boxes.append(_decode(head.bbox_coder, anchors[anchor_idx], deltas, x.shape[-2:]))
            scores.append(top)
            labels.append(idx - anchor_idx * num_classes)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep = scores > cfg.get('score_thr', 0)
        if cfg.get('min_bbox_size', -1) >= 0:
            keep = keep & _size_filter(boxes, cfg['min_bbox_size'])
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        kept = _nms(boxes, scores, labels, cfg['nms'], cfg.get('max_per_img', -1))
        return boxes[kept], scores[kept], labels[kept]


class TwoStageExport(nn.Module):
    """Faster / Mask R-CNN (``RPNHead`` + ``StandardRoIHead`` with a single-level RoI extractor) as
    ``image -> boxes, scores, labels[, masks]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        roi_head = model.roi_head
        if type(roi_head).__name__ != 'StandardRoIHead' or type(model.rpn_head).__name__ != 'RPNHead':
            raise TypeError(f'{type(roi_head).__name__} / {type(model.rpn_head).__name__}: only RPNHead + '
                            'StandardRoIHead export (Faster / Mask R-CNN); cascades are not supported')
        extractors = [roi_head.bbox_roi_extractor] + ([roi_head.mask_roi_extractor] if roi_head.with_mask else [])
        for extractor in extractors:
            if type(extractor).__name__ != 'SingleRoIExtractor' or any(
                    getattr(layer, 'pool_mode', 'avg') != 'avg' for layer in extractor.roi_layers):
                raise TypeError(f'{type(extractor).__name__}: only SingleRoIExtractor with average RoIAlign exports')
        _check_coders(model.rpn_head, roi_head.bbox_head)
        self.model = model
        self.with_mask = roi_head.with_mask
        self.output_names = ('boxes', 'scores', 'labels') + (('masks', ) if self.with_mask else ())

    @staticmethod
    def _roi_features(extractor: nn.Module, feats: List[Tensor], rois: Tensor) -> Tensor:
        """``SingleRoIExtractor``: each RoI pooled from the level its scale maps to. Every level pools
        every RoI and a mask picks the right one (no data-dependent branches in the graph)."""
        num_levels = len(extractor.featmap_strides)
        levels = extractor.map_roi_levels(rois, num_levels)
        out = None
        for lvl, layer in enumerate(extractor.roi_layers[:num_levels]):
            pooled = roi_align(
                feats[lvl],
                rois,
                output_size=layer.output_size,
                spatial_scale=layer.spatial_scale,
                sampling_ratio=layer.sampling_ratio,
                aligned=layer.aligned)
            pooled = pooled * (levels == lvl).to(pooled.dtype)[:, None, None, None]
            out = pooled if out is None else out + pooled
        return out

    def _proposals(self, feats: List[Tensor], image_hw) -> Tensor:
        rpn = self.model.rpn_head
        cfg = rpn.test_cfg
        cls_scores, bbox_preds = rpn(feats)
        priors = rpn.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores], device=feats[0].device)
        nms_pre = cfg.get('nms_pre', -1)
        boxes, scores, level_ids = [], [], []
        for lvl, (cls, reg, anchors) in enumerate(zip(cls_scores, bbox_preds, priors)):
            prob = _flatten_level(cls, rpn.cls_out_channels)
            prob = prob.sigmoid() if rpn.use_sigmoid_cls else prob.softmax(-1)[:, :-1]
            prob = prob.reshape(-1)
            k = prob.shape[0] if nms_pre <= 0 else min(nms_pre, prob.shape[0])
            top, idx = prob.topk(k)
            deltas = _flatten_level(reg, rpn.bbox_coder.encode_size)[idx]
            boxes.append(_decode(rpn.bbox_coder, anchors[idx], deltas, image_hw))
            scores.append(top)
            level_ids.append(torch.full_like(idx, lvl))
        boxes, scores, level_ids = torch.cat(boxes), torch.cat(scores), torch.cat(level_ids)
        if cfg.get('min_bbox_size', -1) >= 0:
            keep = _size_filter(boxes, cfg['min_bbox_size'])
            boxes, scores, level_ids = boxes[keep], scores[keep], level_ids[keep]
        kept = _nms(boxes, scores, level_ids, cfg['nms'], cfg.get('max_per_img', -1))
        return boxes[kept]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        roi_head = self.model.roi_head
        bbox_head, cfg = roi_head.bbox_head, roi_head.test_cfg
        image_hw = x.shape[-2:]
        feats = list(self.model.extract_feat(x))
        proposals = self._proposals(feats, image_hw)
        rois = torch.cat([proposals.new_zeros(proposals.shape[0], 1), proposals], dim=1)
        extractor = roi_head.bbox_roi_extractor
        cls_score, bbox_pred = bbox_head(self._roi_features(extractor, feats[:extractor.num_inputs], rois))
        probs = cls_score.softmax(-1)[:, :-1]  # mmdet's foreground classes: the last column is background
        num_rois, num_classes = probs.shape
        per_class = 1 if bbox_head.reg_class_agnostic else num_classes
        deltas = bbox_pred.reshape(num_rois * per_class, bbox_head.bbox_coder.encode_size)
        boxes = _decode(bbox_head.bbox_coder, proposals.repeat_interleave(per_class, dim=0), deltas,
                        image_hw).reshape(num_rois, per_class, 4)
        boxes = boxes.expand(num_rois, num_classes, 4).reshape(-1, 4)
        scores = probs.reshape(-1)
        labels = torch.arange(num_classes, device=x.device).repeat(num_rois)
        keep = scores > cfg['score_thr']
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        kept = _nms(boxes, scores, labels, cfg['nms'], cfg.get('max_per_img', -1))
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        if not self.with_mask:
            return boxes, scores, labels
        return boxes, scores, labels, self._masks(feats, boxes, labels, image_hw)

    def _masks(self, feats: List[Tensor], boxes: Tensor, labels: Tensor, image_hw) -> Tensor:
        from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
        roi_head = self.model.roi_head
        extractor = roi_head.mask_roi_extractor
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        logits = roi_head.mask_head(self._roi_features(extractor, feats[:extractor.num_inputs], rois))
        if not roi_head.mask_head.class_agnostic:
            logits = logits.gather(1, labels[:, None, None, None].expand(-1, 1, *logits.shape[-2:]))
        masks, _ = _do_paste_mask(logits.sigmoid(), boxes, int(image_hw[0]), int(image_hw[1]), skip_empty=False)
        return masks


def detector_export_module(model: nn.Module) -> nn.Module:
    """The traceable module for a built mmdet detector, or ``TypeError`` saying what exports."""
    if hasattr(model, 'roi_head') and hasattr(model, 'rpn_head'):
        return TwoStageExport(model)
    if hasattr(model, 'bbox_head') and not hasattr(model, 'roi_head'):
        return SingleStageExport(model)
    raise TypeError(f'cannot export a {type(model).__name__}: supported detectors are RetinaNet-style single-stage '
                    'ones and Faster / Mask R-CNN')

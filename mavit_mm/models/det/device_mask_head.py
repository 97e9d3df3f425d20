"""``FCNMaskHead`` whose mask targets are cut from the ground-truth masks on the device."""
from typing import List

import torch
from mmcv.ops import roi_align
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.mask import BitmapMasks
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor
from torch.nn.modules.utils import _pair


def mask_target_on_device(pos_proposals: Tensor, pos_assigned_gt_inds: Tensor, gt_masks: BitmapMasks,
                          cfg: ConfigDict) -> Tensor:
    """Mask targets of one image's positive proposals, as mmdet's ``mask_target_single`` computes them.

    Args:
        pos_proposals: ``(P, 4)`` boxes ``x1, y1, x2, y2`` in the image.
        pos_assigned_gt_inds: ``(P,)`` the ground-truth instance of each box.
        gt_masks: the image's ``(G, H, W)`` bitmap masks.
        cfg: the RCNN train config (``mask_size``, optional ``soft_mask_target``).

    Returns:
        ``(P, *mask_size)`` float targets on the proposals' device.

    The stock function clips the boxes on the host, copies all masks to the device, gathers one full
    ``H x W`` float copy per proposal, runs RoIAlign and sends the result to the host and back. Here the
    masks go to the device once, as uint8 through pinned memory (no wait for the queued kernels), and
    RoIAlign reads each proposal's mask through the batch index of its RoI: the same samples of the same
    values, without the gather or the round trip.
    """
    mask_size = _pair(cfg.mask_size)
    num_pos = pos_proposals.size(0)
    if num_pos == 0 or len(gt_masks) == 0:
        return pos_proposals.new_zeros((0, ) + mask_size)
    device = pos_proposals.device
    # pooled in the proposals' dtype, as the stock path (BitmapMasks.crop_and_resize) pools them
    boxes = pos_proposals.detach().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, gt_masks.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, gt_masks.height)
    masks = torch.from_numpy(gt_masks.masks)
    if device.type == 'cuda':
        # a copy from pageable memory would first wait for every kernel queued so far
        masks = masks.pin_memory()
    masks = masks.to(device, non_blocking=True).to(boxes.dtype)
    rois = torch.cat([pos_assigned_gt_inds.to(boxes)[:, None], boxes], dim=1)
    targets = roi_align(masks[:, None], rois, mask_size, 1.0, 0, 'avg', True).squeeze(1)
    if not cfg.get('soft_mask_target', False):
        return (targets >= 0.5).float()
    return targets.float()


@MODELS.register_module()
class DeviceFCNMaskHead(FCNMaskHead):
    """mmdet's ``FCNMaskHead`` (same arguments, weights and losses) with targets from
    :func:`mask_target_on_device`. Bitmap masks only; polygon masks take the stock path."""

    def get_targets(self, sampling_results: List[SamplingResult], batch_gt_instances: List[InstanceData],
                    rcnn_train_cfg: ConfigDict) -> Tensor:
        if not all(isinstance(gt.masks, BitmapMasks) for gt in batch_gt_instances):
            return super().get_targets(sampling_results, batch_gt_instances, rcnn_train_cfg)
        targets = [
            mask_target_on_device(res.pos_priors, res.pos_assigned_gt_inds, gt.masks, rcnn_train_cfg)
            for res, gt in zip(sampling_results, batch_gt_instances)
        ]
        return torch.cat(targets)

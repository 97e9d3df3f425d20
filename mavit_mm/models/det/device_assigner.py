"""``MaxIoUAssigner`` whose assignment runs as whole-tensor operations, without host synchronisation."""
import torch
from mmdet.models.task_modules.assigners import AssignResult, MaxIoUAssigner
from mmdet.registry import TASK_UTILS
from torch import Tensor


@TASK_UTILS.register_module()
class DeviceMaxIoUAssigner(MaxIoUAssigner):
    """mmdet's ``MaxIoUAssigner`` (same arguments and result) with a synchronisation-free assignment step.

    The stock step loops over the ground truths for the low-quality matches, reading each one's best IoU
    on the host (one synchronisation per ground truth and image) and writing with boolean-mask indexing
    (one more each). Here every step is a ``torch.where`` over the ``(num_gts, num_priors)`` overlaps; where
    several ground truths claim a prior as their best match, the last one wins, as in the stock loop.
    Every input the stock assigner takes gives the same ``gt_inds``, ``max_overlaps`` and int64 ``labels``
    (``neg_iou_thr`` as a float, a 2-tuple or anything else), and the same error for a tuple of another
    length or for labels other than int64 where this torch refuses to write them into int64 as stock does.
    """

    def assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor) -> AssignResult:
        """Assign each of the ``n`` priors to one of the ``k`` ground truths.

        Args:
            overlaps: ``(k, n)`` IoU of every ground truth with every prior.
            gt_labels: ``(k,)`` the ground truths' labels.

        Returns:
            ``gt_inds`` ``(n,)``: -1 ignored, 0 background, i + 1 ground truth i; ``max_overlaps`` ``(n,)``;
            ``labels`` ``(n,)``: the assigned ground truth's label, -1 elsewhere.
        """
        num_gts, num_priors = overlaps.shape
        if num_gts == 0 or num_priors == 0:
            return super().assign_wrt_overlaps(overlaps, gt_labels)
        max_overlaps, argmax_overlaps = overlaps.max(dim=0)
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)

        assigned = torch.full_like(argmax_overlaps, -1)
        # exactly the stock rule: a float is [0, thr), a 2-tuple [low, high); anything else (a list, an
        # int) marks no negatives there, as in mmdet
        if isinstance(self.neg_iou_thr, float):
            assigned = torch.where((max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr), 0, assigned)
        elif isinstance(self.neg_iou_thr, tuple):
            assert len(self.neg_iou_thr) == 2
            low, high = self.neg_iou_thr
            assigned = torch.where((max_overlaps >= low) & (max_overlaps < high), 0, assigned)
        assigned = torch.where(max_overlaps >= self.pos_iou_thr, argmax_overlaps + 1, assigned)

        if self.match_low_quality:
            eligible = gt_max_overlaps >= self.min_pos_iou
            if self.gt_max_assign_all:
                claims = (overlaps == gt_max_overlaps[:, None]) & eligible[:, None]
            else:
                claims = torch.zeros_like(overlaps, dtype=torch.bool)
                claims[torch.arange(num_gts, device=overlaps.device), gt_argmax_overlaps] = eligible
            # the last claim wins: argmax over the reversed rows finds it (argmax returns the first maximum)
            last_claim = num_gts - claims.flip(0).to(torch.uint8).argmax(dim=0)  # 1-based ground-truth index
            assigned = torch.where(claims.any(dim=0), last_claim, assigned)

        if gt_labels.dtype != torch.long:
            # the stock assigner writes the labels into an int64 tensor by index_put, which this torch
            # either refuses for other dtypes (then the same error is raised here) or casts
            probe = assigned.new_full((1, ), -1)
            probe[assigned.new_zeros(1)] = gt_labels[:1]
        # int64 labels, -1 for every prior not assigned (never 255 from uint8 labels)
        labels = torch.where(assigned > 0, gt_labels[(assigned - 1).clamp(min=0)].long(), -1)
        return AssignResult(num_gts=num_gts, gt_inds=assigned, max_overlaps=max_overlaps, labels=labels)

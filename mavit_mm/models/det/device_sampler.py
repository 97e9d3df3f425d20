"""``RandomSampler`` with its permutation drawn on the gallery's device."""
from typing import Union

import numpy as np
import torch
from mmdet.models.task_modules.samplers import RandomSampler
from mmdet.registry import TASK_UTILS
from torch import Tensor


@TASK_UTILS.register_module()
class DeviceRandomSampler(RandomSampler):
    """mmdet's ``RandomSampler`` (same arguments) drawing its random subset where the indices live.

    The stock sampler runs ``torch.randperm`` on the CPU over the whole gallery (for the RPN: every
    negative anchor, ~10^5 per image) and copies the permutation to the GPU, twice per image and stage.
    Here the permutation is drawn on the gallery's device; on the CPU both draw the same numbers, on a GPU
    from the GPU's generator (a different stream of the same uniform distribution, as another seed's).
    """

    def random_choice(self, gallery: Union[Tensor, np.ndarray, list], num: int) -> Union[Tensor, np.ndarray]:
        """``num`` distinct elements of ``gallery`` ``(n,)``, uniformly at random; same type as ``gallery``."""
        if not isinstance(gallery, Tensor):  # lists / arrays: the stock path (host data anyway)
            return super().random_choice(gallery, num)
        if len(gallery) < num:  # the stock sampler asserts this: the same exception type
            raise AssertionError(f'cannot sample {num} elements from a gallery of {len(gallery)}')
        perm = torch.randperm(gallery.numel(), device=gallery.device)[:num]
        return gallery[perm]

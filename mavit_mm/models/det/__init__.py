"""mmdet drop-ins that do on the device what the stock components do on the host.

Each keeps its stock counterpart's arguments and maths (tests compare the two); they are registered in
mmdet's registries under their own names, so a config opts in by type. Importing this package imports
mmdet (the rest of mavit_mm does not): ``custom_imports = dict(imports=['mavit_mm', 'mavit_mm.models.det'])``,
or ``tools/train.py --fast-train``, which swaps them in for ``MaxIoUAssigner``, ``RandomSampler`` and
``FCNMaskHead``.
"""
from .device_assigner import DeviceMaxIoUAssigner
from .device_mask_head import DeviceFCNMaskHead, mask_target_on_device
from .device_sampler import DeviceRandomSampler

__all__ = ['DeviceFCNMaskHead', 'DeviceMaxIoUAssigner', 'DeviceRandomSampler', 'mask_target_on_device']

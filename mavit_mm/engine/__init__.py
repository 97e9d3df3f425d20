"""Training-loop parts for mmengine's Runner that the stack lacks (registered in mmengine's root registries)."""
from .schedulers import EpochWarmupCosineLR

__all__ = ['EpochWarmupCosineLR']

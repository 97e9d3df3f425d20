"""Training-loop parts for mmengine's Runner that the stack lacks (registered in mmengine's root registries)."""
from .cuda_graphs import CUDAGraphHook, disable_cuda_graphs, enable_cuda_graphs
from .schedulers import EpochWarmupCosineLR

__all__ = ['CUDAGraphHook', 'EpochWarmupCosineLR', 'disable_cuda_graphs', 'enable_cuda_graphs']

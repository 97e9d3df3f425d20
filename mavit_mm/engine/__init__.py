"""Training-loop parts for mmengine's Runner that the stack lacks (registered in mmengine's root registries)."""
from .conv_buckets import ConvSizeBucketsHook
from .cuda_graphs import CUDAGraphHook, disable_cuda_graphs, enable_cuda_graphs
from .fast_train import apply_fast_train
from .input_shapes import InputShapeLogHook, add_input_shape_log
from .loader_workers import LoaderWorkersShutdownHook
from .optim_constructor import GroupedOptimWrapperConstructor
from .profiling import PhaseRangesHook, add_profiling
from .schedulers import EpochWarmupCosineLR
from .shape_buckets import BatchShapeBucketPad

__all__ = [
    'BatchShapeBucketPad', 'ConvSizeBucketsHook', 'CUDAGraphHook', 'EpochWarmupCosineLR',
    'GroupedOptimWrapperConstructor', 'InputShapeLogHook', 'LoaderWorkersShutdownHook', 'PhaseRangesHook',
    'add_input_shape_log', 'add_profiling', 'apply_fast_train', 'disable_cuda_graphs', 'enable_cuda_graphs'
]

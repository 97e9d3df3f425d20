"""The padded batch shapes a config's training batches take, without a model or a GPU.

What a detection run pays per shape (a step at a new size, a training-graph capture, a graph kept) depends on
how many padded batch shapes its batches take and how often each comes. :func:`batch_shapes` iterates the
config's own train dataloader (its sampler with a given seed, its pipeline; no workers) through the config's
own data preprocessor in training mode (its padding and batch augments, such as
:class:`~mavit_mm.engine.shape_buckets.BatchShapeBucketPad`), on the CPU; :func:`bucketed` pads shapes on as
``BatchShapeBucketPad`` would. ``tools/analysis_tools/batch_shapes.py`` prints the summary (:func:`summarize`).
"""
import copy
import importlib
from collections import Counter
from typing import Dict, List, Optional, Set, Tuple

from mmengine.config import Config

from ..engine.shape_buckets import bucket_shape

Shape = Tuple[int, int]


def batch_shapes(cfg: Config, iters: int, seed: int = 0) -> List[Shape]:
    """The ``(H, W)`` the data preprocessor of ``cfg`` gives the first ``iters`` training batches (data root
    already set), over as many epochs as it takes."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    scope = cfg.get('default_scope', 'mmengine')
    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False, pin_memory=False)
    shapes: List[Shape] = []
    with DefaultScope.overwrite_default_scope(scope):
        pre_cfg = copy.deepcopy(cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor'))
        preprocess = importlib.import_module(f'{scope}.registry').MODELS.build(pre_cfg)
        loader = Runner.build_dataloader(loader_cfg, seed=seed)
        epoch = 0
        while len(shapes) < iters:
            # as mmengine's DistSamplerSeedHook does: each epoch its own order
            sampler = loader.sampler if hasattr(loader.sampler, 'set_epoch') else loader.batch_sampler.sampler
            sampler.set_epoch(epoch)
            epoch += 1
            if len(loader) == 0:
                raise ValueError('the config\'s train dataloader gives no batch: check its data root and ann_file')
            for batch in loader:
                inputs = preprocess(batch, training=True)['inputs']
                shapes.append((int(inputs.shape[-2]), int(inputs.shape[-1])))
                if len(shapes) == iters:
                    break
    return shapes


def bucketed(shapes: List[Shape], size_divisor: int) -> List[Shape]:
    """``shapes`` padded on to multiples of ``size_divisor`` (:func:`bucket_shape`)."""
    return [bucket_shape(h, w, size_divisor) for h, w in shapes]


def summarize(shapes: List[Shape],
              reference: Optional[List[Shape]] = None,
              max_graphs: int = 48,
              capture_after: int = 1) -> Dict[str, float]:
    """Distinct shapes, the iterations at a shape's first or second sighting, the share of iterations a
    ``CUDAGraphHook(max_graphs=..., capture_after=...)`` replays, and, given the same batches' ``reference``
    shapes, the extra pixels.

    The hook captures a shape at its sighting number ``capture_after + 1`` while it holds fewer than
    ``max_graphs`` shapes, and replays that shape's later sightings; the capturing step itself is no replay.
    """
    seen: Counter = Counter()
    graphed: Set[Shape] = set()
    first = second = replayed = 0
    for s in shapes:
        seen[s] += 1
        first += seen[s] == 1
        second += seen[s] == 2
        if s in graphed:
            replayed += 1
        elif seen[s] == capture_after + 1 and len(graphed) < max_graphs:
            graphed.add(s)
    out = dict(
        iters=len(shapes),
        shapes=len(seen),
        first_sightings=first,
        second_sightings=second,
        replayed_share=replayed / len(shapes) if shapes else 0.0)
    if reference is not None:
        out['extra_pixels'] = sum(h * w for h, w in shapes) / sum(h * w for h, w in reference) - 1
    return out


__all__ = ['batch_shapes', 'bucketed', 'summarize']

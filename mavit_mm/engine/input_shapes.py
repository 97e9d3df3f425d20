"""Log the input shape a module (the backbone) sees at each training iteration.

On COCO a new padded batch shape comes at many iterations, and what an iteration costs depends on whether its
shape is new, seen once (where :class:`~mavit_mm.engine.cuda_graphs.CUDAGraphHook` captures it) or seen more
often. :class:`InputShapeLogHook` puts the module's input height and width into each iteration's log
(``input_h`` / ``input_w`` in the text log and ``vis_data/scalars.json``, the values of that iteration, not
a window's mean), so that iteration times can be split by shape afterwards (:func:`split_by_sighting`).
``tools/train.py --log-input-shapes`` adds it.
"""
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

KEYS = ('input_h', 'input_w')


@HOOKS.register_module()
class InputShapeLogHook(Hook):
    """Record the height and width of ``module``'s first input at each training forward as the scalars
    ``train/input_h`` / ``train/input_w`` of the Runner's message hub. Add it with :func:`add_input_shape_log`,
    which also has the log processor log each iteration's own values (by default it logs a window's mean).

    Args:
        module (str): The model's submodule whose input is recorded. Defaults to ``'backbone'``.
    """

    priority = 'NORMAL'

    def __init__(self, module: str = 'backbone') -> None:
        self.module = module
        self._handle: Optional[RemovableHandle] = None

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        try:
            target = model.get_submodule(self.module)
        except AttributeError as e:
            raise ValueError(f'InputShapeLogHook: the model ({type(model).__name__}) has no submodule '
                             f'{self.module!r}; set module= to one of {[n for n, _ in model.named_children()]}') from e
        hub = runner.message_hub

        def record(mod: nn.Module, args: Tuple) -> None:
            x = args[0] if args else None
            if mod.training and isinstance(x, Tensor) and x.dim() >= 2:
                hub.update_scalar('train/input_h', int(x.shape[-2]))
                hub.update_scalar('train/input_w', int(x.shape[-1]))

        self._handle = target.register_forward_pre_hook(record)

    def after_run(self, runner) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def add_input_shape_log(cfg: Config, module: str = 'backbone') -> None:
    """Add :class:`InputShapeLogHook` to ``cfg`` and have the log processor log each iteration's own
    ``input_h`` / ``input_w`` (not their mean over the logging window)."""
    cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [dict(type='InputShapeLogHook', module=module)]
    log_processor = cfg.setdefault('log_processor', dict(type='LogProcessor'))
    custom = [c for c in log_processor.get('custom_cfg', None) or [] if c.get('data_src') not in KEYS]
    log_processor['custom_cfg'] = custom + [dict(data_src=k, method_name='mean', window_size=1) for k in KEYS]


def split_by_sighting(steps: Sequence[Dict[str, float]], warmup: int) -> Optional[Dict[str, Dict[str, float]]]:
    """Iteration times after the first ``warmup`` steps, split by how often the step's input shape had come
    before it, counting from the run's first step: ``'first'`` (a shape new to the process), ``'second'``
    (seen once before: the step where training graphs capture it) and ``'later'``.

    ``steps``: logged training iterations in order, each with ``time`` (seconds), ``input_h`` and ``input_w``.
    Returns per group the count and the median and p90 time in ms (groups without steps left out), plus
    ``'shapes'``: ``{'n': distinct shapes in the run}``; ``None`` if the steps carry no shapes.
    """
    if not steps or any(k not in s for s in steps for k in KEYS):
        return None
    seen: Dict[Tuple[int, int], int] = {}
    groups: Dict[str, List[float]] = {'first': [], 'second': [], 'later': []}
    for i, step in enumerate(steps):
        shape = (int(step['input_h']), int(step['input_w']))
        seen[shape] = seen.get(shape, 0) + 1
        if i >= warmup:
            groups[('first', 'second', 'later')[min(seen[shape], 3) - 1]].append(step['time'] * 1e3)
    out: Dict[str, Dict[str, float]] = {}
    for name, times in groups.items():
        if times:
            ordered = sorted(times)
            out[name] = dict(
                n=len(times),
                median_ms=statistics.median(ordered),
                p90_ms=ordered[int(round(0.9 * (len(ordered) - 1)))])
    out['shapes'] = dict(n=len(seen))
    return out


__all__ = ['InputShapeLogHook', 'add_input_shape_log', 'split_by_sighting', 'KEYS']

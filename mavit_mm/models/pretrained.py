"""Loading the authors' released checkpoints (and ours) into a MAViT backbone."""
import logging
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from mavit_mm.utils.checkpoint_file import check_checkpoint_file

# Top-level modules of the release's ImageNet classifier that are not part of the backbone.
CLS_HEAD_PREFIXES = ('proj.', 'norm.', 'head.')


def extract_state_dict(checkpoint: object) -> Dict[str, Tensor]:
    """The tensor dict inside a checkpoint: mmengine's ``state_dict``, the release's ``model``
    (timm-style training scripts) or a bare dict; a DDP ``module.`` prefix is removed."""
    state = checkpoint
    for key in ('state_dict', 'model', 'module'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise TypeError(f'expected a checkpoint dict of tensors, got {type(state).__name__}')
    if state and all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return state


def describe_arch(state: Dict[str, Tensor]) -> Tuple[List[int], List[int]]:
    """Stage widths and depths of a MAViT state dict (from ``layers.{i}.blocks.{j}.pos``)."""
    widths: Dict[int, int] = {}
    depths: Dict[int, int] = {}
    for key, value in state.items():
        m = re.fullmatch(r'layers\.(\d+)\.blocks\.(\d+)\.pos\.weight', key)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            widths[i] = int(value.shape[0])
            depths[i] = max(depths.get(i, 0), j + 1)
    stages = sorted(widths)
    return [widths[i] for i in stages], [depths[i] for i in stages]


def guess_arch_name(state: Dict[str, Tensor], arch_zoo: Dict[str, dict]) -> Optional[str]:
    """The long name of the zoo arch whose widths and depths match ``state``, if any."""
    widths, depths = describe_arch(state)
    for name, setting in arch_zoo.items():
        if len(name) > 1 and setting['embed_dims'] == widths and setting['depths'] == depths:
            return name
    return None


STEM_WEIGHT = 'patch_embed.proj.0.weight'


def adapt_input_channels(state: Dict[str, Tensor], own: Dict[str, Tensor], log=print) -> Dict[str, Tensor]:
    """Fit a 3-channel stem ``(C, 3, 3, 3)`` to a model with another ``in_channels``.

    One channel: the RGB filters summed (a gray image equals R = G = B). More: the RGB filters
    tiled over the channels and scaled by ``3 / in_channels`` so activations keep their size.
    """
    if STEM_WEIGHT not in state or STEM_WEIGHT not in own:
        return state
    w, target = state[STEM_WEIGHT], own[STEM_WEIGHT]
    c_in, c_model = w.shape[1], target.shape[1]
    if c_in == c_model or c_in != 3 or w.shape[0] != target.shape[0]:
        return state
    if c_model == 1:
        adapted = w.sum(dim=1, keepdim=True)
    else:
        adapted = w.repeat(1, (c_model + 2) // 3, 1, 1)[:, :c_model] * (3.0 / c_model)
    log(f'Adapted the pretrained stem from 3 to {c_model} input channels ({STEM_WEIGHT})')
    state = OrderedDict(state)
    state[STEM_WEIGHT] = adapted.to(w.dtype)
    return state


def load_pretrained_backbone(model: nn.Module,
                             filename: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu',
                             logger: Optional[logging.Logger] = None) -> Tuple[List[str], List[str]]:
    """Load MAViT weights from a checkpoint file or URL into ``model``.

    Accepts a release ImageNet checkpoint (its classification head is ignored), a detection /
    segmentation checkpoint (keys under ``backbone.``, detected automatically) or a plain backbone
    state dict. Shapes must match: a checkpoint of another arch raises ``ValueError`` naming the
    tensors and the arch the checkpoint looks like.

    Returns:
        tuple[list[str], list[str]]: Missing and unexpected keys (both also logged).
    """
    log = logger.info if logger is not None else print
    warn = logger.warning if logger is not None else print
    check_checkpoint_file(filename)
    state = extract_state_dict(CheckpointLoader.load_checkpoint(filename, map_location=map_location))
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        if not state:
            raise ValueError(f'{filename}: no keys start with prefix {prefix!r}')
    own = model.state_dict()
    ignored = [k for k in state if k.startswith(CLS_HEAD_PREFIXES) and k not in own]
    state = OrderedDict((k, v) for k, v in state.items() if k not in ignored)
    if not any(k in own for k in state):
        raise ValueError(f'{filename} holds no MAViT backbone weights (first keys: '
                         f'{list(state)[:5]}); expected names like "layers.0.blocks.0.attn.qkvo.weight"')

    state = adapt_input_channels(state, own, log)
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        shown = '\n'.join(f'  {k}: checkpoint {a} vs model {b}' for k, a, b in mismatched[:8])
        arch_zoo = getattr(type(model), 'arch_zoo', {})
        guess = guess_arch_name(state, arch_zoo)
        hint = (f"it looks like a MAViT-{guess} checkpoint: set arch='{guess}'"
                if guess else f'its stage widths/depths are {describe_arch(state)}')
        raise ValueError(f'{filename} does not fit this model: {len(mismatched)} tensors differ in '
                         f'shape ({hint}).\n{shown}')

    missing, unexpected = model.load_state_dict(state, strict=False)
    log(f'Loaded {len(state) - len(unexpected)} MAViT tensors from {filename}')
    if ignored:
        heads = ', '.join(sorted({k.split('.')[0] for k in ignored}))
        log(f'Ignored {len(ignored)} classification-head keys ({heads}.*)')
    if missing:
        warn(f'Missing keys, left at their initialisation ({len(missing)}): {", ".join(missing)}')
    if unexpected:
        warn(f'Unexpected keys in {filename}, not loaded ({len(unexpected)}): {", ".join(unexpected)}')
    return list(missing), list(unexpected)

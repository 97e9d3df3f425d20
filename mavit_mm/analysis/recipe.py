"""The effective training recipe of a config, and its comparison with the release's.

:func:`effective_recipe` resolves a config (through its ``_base_`` / ``mmdet::`` chain, as loaded) into the
fields that decide how it trains. Two fields are computed rather than read: the learning rate over the
whole schedule (mmengine's own schedulers, stepped as its ``ParamSchedulerHook`` steps them) and the
weight decay / lr multiplier of every parameter of the built model (mmengine's optimizer constructor).
:func:`compare_with_release` puts it beside :data:`~mavit_mm.analysis.release_recipes.RELEASE_RECIPES`,
evaluating the release's lr rules (mmcv 1.x, timm) and parameter rules on the same model independently.
"""
import copy
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from torch import nn

from ..config.run_config import fp32_optim_wrapper
from .release_recipes import ADE_CROP, DELIBERATE, DETR_MS_CROP, RELEASE_RECIPES, config_family

# Training-set sizes that fix the iterations per epoch of epoch-based schedules.
TRAIN_IMAGES = {'CocoDataset': 117266, 'ImageNet': 1281167}  # COCO train2017 after filter_empty_gt
LR_RTOL = 1e-6


# ----------------------------------------------------------------------------------------- small readers
def _gpus_and_batch(cfg: Config, name: str) -> Tuple[int, int]:
    per_gpu = int(cfg.train_dataloader.batch_size)
    m = re.search(r'_(\d+)xb(\d+)', name)
    if m:
        return int(m.group(1)), per_gpu
    base = cfg.get('auto_scale_lr', {}).get('base_batch_size')
    return (base // per_gpu if base else 1), per_gpu


def _precision(optim_wrapper: dict) -> str:
    if optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        return 'fp32'
    scale = optim_wrapper.get('loss_scale', 'dynamic')
    dtype = optim_wrapper.get('dtype') or 'fp16'
    dtype = {'float16': 'fp16', 'bfloat16': 'bf16'}.get(str(dtype), str(dtype))
    if scale == 'dynamic' or isinstance(scale, dict):
        return f'{dtype}, dynamic loss scale'
    return f'{dtype}, static loss scale {scale:g}'


def _norm_types(node: Any, skip: Sequence[str] = ('backbone', )) -> List[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in skip:
                continue
            if key == 'norm_cfg' and isinstance(value, dict):
                found.append(value.get('type'))
            else:
                found += _norm_types(value, ())
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _norm_types(value, ())
    return found


def _drop_path_rate(backbone: dict) -> Optional[float]:
    if backbone.get('drop_path_rate') is not None:
        return float(backbone['drop_path_rate'])
    if backbone.get('type') == 'MAViT':
        from mavit_mm.models.backbones import MAViT
        return float(MAViT.parse_arch(backbone.get('arch', 'tiny')).get('drop_path_rate', 0.0))
    return None


def _scales(transform: dict) -> List[int]:
    return sorted(min(s) for s in transform.get('scales', transform.get('scale', [])))


def summarize_pipeline(cfg: Config) -> str:
    """The train pipeline as the release tables name it (the same words for the same augmentation)."""
    pipeline = cfg.train_dataloader.dataset.get('pipeline') or cfg.get('train_pipeline') or []
    types = [t['type'] for t in pipeline]
    by_type = {t['type']: t for t in pipeline}
    if 'RandomChoice' in by_type:
        branches = by_type['RandomChoice']['transforms']
        crops = [t for b in branches for t in b if t['type'] == 'RandomCrop']
        if (len(branches) == 2 and crops and crops[0].get('crop_type') == 'absolute_range'
                and tuple(crops[0]['crop_size']) == (384, 600) and _scales(branches[0][0]) == list(range(480, 801, 32))
                and _scales(branches[1][0]) == [400, 500, 600] and 'RandomFlip' in by_type):
            return DETR_MS_CROP
    if 'Resize' in by_type and by_type['Resize'].get('scale') in ((1333, 800), [1333, 800]) \
            and by_type['Resize'].get('keep_ratio') and 'RandomFlip' in by_type and len(types) <= 5:
        return 'resize 1333x800 (keep ratio); flip'
    if {'RandomResize', 'RandomCrop', 'RandomFlip', 'PhotoMetricDistortion'} <= set(types):
        r, c = by_type['RandomResize'], by_type['RandomCrop']
        if tuple(r['scale']) == (2048, 512) and tuple(r['ratio_range']) == (0.5, 2.0) \
                and tuple(c['crop_size']) == (512, 512) and c.get('cat_max_ratio') == 0.75:
            return ADE_CROP
    if 'RandomResizedCrop' in by_type and 'RandAugment' in by_type:
        crop, ra = by_type['RandomResizedCrop'], by_type['RandAugment']
        erase = by_type.get('RandomErasing', {}).get('erase_prob', 0)
        augments = {a['type']: a['alpha'] for a in (cfg.model.get('train_cfg') or {}).get('augments', [])}
        loss = cfg.model.head.get('loss', {})
        return (f"random resized crop {crop['scale']} ({crop.get('interpolation', 'bilinear')}); flip; "
                f"RandAugment m{ra.get('magnitude_level')} mstd{ra.get('magnitude_std')}; random erasing {erase}; "
                f"mixup {augments.get('Mixup', 0)} / cutmix {augments.get('CutMix', 0)}; "
                f"label smoothing {loss.get('label_smooth_val', 0)}")
    return ' > '.join(types)


def _sampler(cfg: Config) -> str:
    loader = cfg.train_dataloader
    if loader.get('batch_sampler', {}).get('type') == 'AspectRatioBatchSampler':
        return 'aspect-ratio groups'
    sampler = loader.get('sampler', {})
    if sampler.get('type') == 'RepeatAugSampler':
        return f"repeated augmentation x{sampler.get('num_repeats', 3)}"
    return 'shuffle' if sampler.get('shuffle', True) else 'in order'


def _ema(cfg: Config) -> Optional[float]:
    for hook in cfg.get('custom_hooks', []):
        if hook.get('type') == 'EMAHook':
            return 1.0 - hook.get('momentum', 0.0002)
    return None


def _loop(cfg: Config) -> Tuple[bool, int]:
    """(by epoch, number of epochs or iterations)."""
    train_cfg = cfg.train_cfg
    if 'max_epochs' in train_cfg:
        return True, int(train_cfg.max_epochs)
    return False, int(train_cfg.max_iters)


def _epoch_length(cfg: Config, gpus: int, per_gpu: int) -> int:
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset:  # RepeatDataset / ClassBalancedDataset wrappers
        dataset = dataset.dataset
    images = TRAIN_IMAGES.get(dataset.get('type'), 0)
    if not images:
        return 1
    per_rank = math.ceil(images / gpus)  # mmengine's / mmpretrain's samplers pad the ranks to equal length
    if cfg.train_dataloader.get('drop_last', False):
        return per_rank // per_gpu
    return math.ceil(per_rank / per_gpu)


# ----------------------------------------------------------------------------------------- computed fields
def lr_curve(cfg: Config, total_iters: int, epoch_length: int) -> Tuple[float, ...]:
    """The lr of the first param group at every iteration, relative to the optimizer's base lr.

    Built from ``cfg.param_scheduler`` with mmengine's schedulers and stepped as mmengine's
    ``ParamSchedulerHook`` does (iteration-based ones after every iteration, epoch-based ones after every
    epoch), with ``end`` defaulting to the loop's length as the Runner sets it. Curves are kept per
    (schedulers, base lr, loop, length): the T/S/B/L configs of a family share theirs.
    """
    key = (repr(cfg.get('param_scheduler')), float(cfg.optim_wrapper.optimizer.lr), _loop(cfg), total_iters,
           epoch_length)
    if key not in _CURVES:
        _CURVES[key] = tuple(_step_schedulers(cfg, total_iters, epoch_length))
    return _CURVES[key]


_CURVES: Dict[tuple, Tuple[float, ...]] = {}


def _step_schedulers(cfg: Config, total_iters: int, epoch_length: int) -> List[float]:
    base_lr = float(cfg.optim_wrapper.optimizer.lr)  # eta_min & co. are absolute
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    by_epoch_loop, length = _loop(cfg)
    schedulers = []
    configs = cfg.get('param_scheduler') or []
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Detected call of `scheduler.step()`')
        for sched in (configs if isinstance(configs, (list, tuple)) else [configs]):
            sched = copy.deepcopy(dict(sched))
            by_epoch = sched.get('by_epoch', True)
            sched.setdefault(
                'end', length if by_epoch == by_epoch_loop else
                (length * epoch_length if not by_epoch else length // epoch_length))
            schedulers.append(
                PARAM_SCHEDULERS.build(sched, default_args=dict(optimizer=optimizer, epoch_length=epoch_length)))
    curve = []
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Detected call of `scheduler.step()`')  # no optimizer here
        for it in range(total_iters):
            curve.append(optimizer.param_groups[0]['lr'] / base_lr)
            for s in schedulers:
                if not s.by_epoch:
                    s.step()
            if (it + 1) % epoch_length == 0:
                for s in schedulers:
                    if s.by_epoch:
                        s.step()
    return curve


def release_lr(schedule: dict, base_lr: float, it: int, epoch_length: int, total_iters: int) -> float:
    """The release's lr at iteration ``it`` relative to ``base_lr`` (mmcv 1.x hooks / timm), from its rules.

    ``min_lr`` and ``warmup_lr`` in ``schedule`` are absolute, as in the release's files."""
    policy = schedule['policy']
    lr_min = schedule.get('min_lr', 0.0) / base_lr
    if policy == 'timm_cosine':
        e, warm, lr_warm = it // epoch_length, schedule['warmup_epochs'], schedule['warmup_lr'] / base_lr
        if e < warm:
            return lr_warm + e * (1.0 - lr_warm) / warm
        return lr_min + 0.5 * (1.0 - lr_min) * (1 + math.cos(math.pi * e / schedule['epochs']))
    if policy == 'step':
        epoch = it // epoch_length
        lr = 0.1**len([s for s in schedule['steps'] if epoch >= s])
    elif policy == 'poly':
        lr = (1.0 - lr_min) * (1 - it / total_iters)**schedule['power'] + lr_min
    else:
        raise ValueError(f'unknown release lr policy {policy!r}')
    warmup = schedule.get('warmup_iters', 0)
    if it < warmup:  # mmcv 1.x 'linear' warm-up: scales the regular lr of this iteration
        lr *= 1 - (1 - it / warmup) * (1 - schedule['warmup_ratio'])
    return lr


def decay_table(model: nn.Module, optim_wrapper: dict) -> Dict[str, Tuple[float, float]]:
    """Parameter name -> (lr, weight decay) that mmengine's optimizer constructor gives it."""
    wrapper = copy.deepcopy(dict(optim_wrapper))
    fp32_optim_wrapper(wrapper)  # the same param groups; mmengine's AmpOptimWrapper cannot be built on CPU
    wrapper = build_optim_wrapper(model, wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    table = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            table[names[id(p)]] = (group['lr'], group.get('weight_decay', 0.0))
    return table


def timm_decay_table(model: nn.Module, lr: float, weight_decay: float) -> Dict[str, Tuple[float, float]]:
    """timm's optimizer factory: no weight decay on 1-D parameters and biases."""
    return {
        n: (lr, 0.0 if p.ndim <= 1 or n.endswith('.bias') else weight_decay)
        for n, p in model.named_parameters() if p.requires_grad
    }


def _decay_summary(table: Dict[str, Tuple[float, float]], model: nn.Module) -> str:
    numel = dict((n, p.numel()) for n, p in model.named_parameters())
    base_lr = max(lr for lr, _ in table.values())
    no_decay = [n for n, (_, wd) in table.items() if wd == 0]
    other_lr = [n for n, (lr, _) in table.items() if not math.isclose(lr, base_lr)]
    text = f'no weight decay on {len(no_decay)} of {len(table)} tensors ' \
           f'({sum(numel[n] for n in no_decay) / 1e6:.3f} M params)'
    return text + (f'; other lr on {len(other_lr)}' if other_lr else '')


# ----------------------------------------------------------------------------------------- the recipe
def effective_recipe(cfg: Config,
                     name: str,
                     model: Optional[nn.Module] = None,
                     probes: Sequence[int] = ()) -> Dict[str, Any]:
    """The fields of ``cfg``'s training recipe (see the module docstring); ``name`` is the config's name.

    ``model`` (``cfg.model`` built) adds the per-parameter optimizer table; ``probes`` adds the lr at
    those iterations.
    """
    gpus, per_gpu = _gpus_and_batch(cfg, name)
    by_epoch, length = _loop(cfg)
    epoch_length = _epoch_length(cfg, gpus, per_gpu)
    total = length * epoch_length if by_epoch else length
    optimizer = cfg.optim_wrapper.optimizer
    backbone = cfg.model.get('backbone', {})
    head_norms = sorted({t for t in _norm_types(cfg.model) if t})
    recipe = dict(
        drop_path_rate=_drop_path_rate(backbone),
        backbone_norm=(backbone.get('norm_cfg') or {}).get('type', 'BN') +
        (' (SyncBN across GPUs)' if cfg.get('sync_bn') else ''),
        head_norms=', '.join(head_norms) if head_norms else None,
        frozen_stages=backbone.get('frozen_stages', -1),
        norm_eval=backbone.get('norm_eval', False),
        batch=(gpus, per_gpu),
        optimizer=dict(
            type=optimizer.type,
            lr=optimizer.lr,
            betas=tuple(optimizer.get('betas', (0.9, 0.999))),
            weight_decay=optimizer.get('weight_decay', 0.0)),
        paramwise=cfg.optim_wrapper.get('paramwise_cfg'),
        clip_grad=cfg.optim_wrapper.get('clip_grad'),
        precision=_precision(cfg.optim_wrapper),
        length=f'{length} {"epochs" if by_epoch else "iters"}',
        epoch_length=epoch_length,
        total_iters=total,
        train_pipeline=summarize_pipeline(cfg),
        sampler=_sampler(cfg),
        ema=_ema(cfg),
        val_interval=f'{cfg.train_cfg.get("val_interval", 1)} {"epoch" if by_epoch else "iters"}',
    )
    if probes:
        curve = lr_curve(cfg, total, epoch_length)
        recipe['lr'] = {it: optimizer.lr * curve[it] for it in probes if it < total}
        recipe['_curve'] = curve
    if model is not None:
        recipe['_decay'] = decay_table(model, cfg.optim_wrapper)
        recipe['param_groups'] = _decay_summary(recipe['_decay'], model)
    return recipe


def default_probes(total: int, epoch_length: int) -> List[int]:
    """Iterations to print the lr at: the warm-up, the epoch boundaries around the schedule's changes, the end."""
    points = {0, 250, 499, 500, 1499, 1500, total // 2, total - 1}
    if epoch_length > 1:
        points |= {e * epoch_length + d for e in (5, 8, 11, 27, 33) for d in (-1, 0)}
    return sorted(p for p in points if 0 <= p < total)


# ----------------------------------------------------------------------------------------- comparison
@dataclass
class Row:
    """One field of the comparison: ours, the release's, and the verdict (same / deliberate / DIFFERENT)."""
    field: str
    ours: str
    release: str
    status: str
    note: str = ''


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    if isinstance(value, dict):
        return ', '.join(f'{k}={_fmt(v)}' for k, v in value.items())
    if isinstance(value, tuple):
        return ' x '.join(map(str, value)) if all(isinstance(v, int) for v in value) else str(value)
    return str(value)


def compare_with_release(cfg: Config, name: str, model: nn.Module) -> List[Row]:
    """``cfg``'s effective recipe beside the release's, field by field, on the built ``model``.

    Raises ``KeyError`` naming the configs that have a release entry when ``name`` has none.
    """
    if name not in RELEASE_RECIPES:
        raise KeyError(f'no release recipe for {name!r}; the release covers: {", ".join(sorted(RELEASE_RECIPES))}')
    release = RELEASE_RECIPES[name]
    ours = effective_recipe(cfg, name, model)
    deliberate = DELIBERATE.get(config_family(name), {})
    rows: List[Row] = []

    def add(field: str,
            ours_value: Any,
            release_value: Any,
            same: Optional[bool] = None,
            note: str = '',
            measure: float = 0.0) -> None:
        same = (ours_value == release_value) if same is None else same
        why = deliberate.get(field)
        if same:
            status = 'same'
        elif why is not None and measure <= why.get('within', math.inf):
            status, note = 'deliberate', why['reason'] + (f' ({note})' if note else '')
        else:
            status = 'DIFFERENT'
        rows.append(Row(field, _fmt(ours_value), _fmt(release_value), status, note))

    for field in ('drop_path_rate', 'backbone_norm', 'head_norms', 'batch', 'precision', 'train_pipeline', 'sampler',
                  'ema', 'val_interval'):
        if field in release:
            a, b = ours[field], release[field]
            same = math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) and isinstance(b, float) else None
            add(field, a, b, same)
    opt_r = dict(release['optimizer'])
    add('optimizer', ours['optimizer'], opt_r, same=all(_close(ours['optimizer'][k], v) for k, v in opt_r.items()))

    # every parameter's weight decay and lr, ours vs the release's rule, on the same model
    if release['paramwise'] == 'timm':
        theirs = timm_decay_table(model, opt_r['lr'], opt_r['weight_decay'])
    else:
        wrapper = dict(type='OptimWrapper', optimizer=dict(opt_r))
        if release['paramwise']:
            wrapper['paramwise_cfg'] = release['paramwise']
        theirs = decay_table(model, wrapper)
    mine = ours['_decay']
    differ = sorted(n for n in theirs if not (_close(mine[n][0], theirs[n][0]) and _close(mine[n][1], theirs[n][1])))
    add('param_groups',
        ours['param_groups'],
        _decay_summary(theirs, model),
        same=not differ,
        note=f'{len(differ)} tensors differ, e.g. {", ".join(differ[:3])}' if differ else '')

    # the lr over the whole schedule
    sched = dict(release['schedule'])
    total, epoch_length = ours['total_iters'], ours['epoch_length']
    release_total = sched['epochs'] * epoch_length if 'epochs' in sched else sched['iters']
    curve = lr_curve(cfg, total, epoch_length)
    key = (repr(sorted(sched.items())), opt_r['lr'], epoch_length, release_total)
    if key not in _CURVES:
        _CURVES[key] = tuple(
            release_lr(sched, opt_r['lr'], it, epoch_length, release_total) for it in range(release_total))
    theirs_curve = _CURVES[key]
    worst, at = 0.0, 0
    for it in range(min(total, release_total)):  # both curves are relative to the base lr
        err = abs(curve[it] - theirs_curve[it])
        if err > worst:
            worst, at = err, it
    probes = default_probes(total, epoch_length)
    show = lambda c, lr: ' '.join(f'{lr * c[p]:.3g}@{p}' for p in probes if p < len(c))  # noqa: E731
    add('schedule',
        f'{ours["length"]}; lr {show(curve, ours["optimizer"]["lr"])}',
        f'{release_total} iters; lr {show(theirs_curve, opt_r["lr"])}',
        same=total == release_total and worst <= LR_RTOL,
        note=f'largest lr difference {worst:.3g} x the base lr, at iteration {at}' if worst > LR_RTOL else '',
        measure=worst if total == release_total else math.inf)
    return rows


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def format_rows(name: str, rows: List[Row]) -> str:
    """A markdown table of one config's comparison."""
    lines = [f'### {name}', '', '| field | ours | release | status |', '|---|---|---|---|']
    for r in rows:
        status = r.status + (f': {r.note}' if r.note else '')
        lines.append(f'| {r.field} | {r.ours} | {r.release} | {status} |')
    return '\n'.join(lines)


def undocumented(rows: List[Row]) -> List[Row]:
    """The rows that differ from the release without a documented reason."""
    return [r for r in rows if r.status == 'DIFFERENT']

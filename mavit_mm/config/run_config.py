"""The config a run's Runner gets, for mmdet, mmseg and mmpretrain configs.

:func:`train_config` and :func:`test_config` turn a config file plus the switches of ``tools/train.py`` /
``tools/test.py`` into the config handed to mmengine's Runner: the one place where a switch becomes config
edits. The functions they call (data root, AMP, fast training, CUDA-graph hooks, launches, visualization,
TTA, dataset checks) are usable on their own; nothing here is model-specific.
"""
import copy
import importlib
import logging
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from torch import nn

from ..engine.fast_train import apply_fast_train
from ..engine.input_shapes import add_input_shape_log
from ..engine.loader_workers import needs_shutdown
from ..engine.profiling import add_profiling
from ..utils.checkpoint_file import check_checkpoint_file
from ..utils.config_walk import SPLITS, iter_datasets, used_types
from .dataset_checks import check_annotations
from .launch import prepare_distributed

DATASET_LAYOUTS = {
    'CocoDataset': """\
  {root}
    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/   (118k images)
    val2017/     (5k images)""",
    'ADE20KDataset': """\
  {root}
    images/training/        annotations/training/      (*.jpg / *.png, 20,210)
    images/validation/      annotations/validation/    (2,000)""",
    'ImageNet': """\
  {root}
    train/n01440764/*.JPEG ...       val/ (or meta/train.txt, meta/val.txt with ann_file)""",
}


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataloader and evaluator of ``cfg`` at ``data_root``.

    Dataset configs got the base config's ``data_root`` copied in when the file was parsed, so
    setting ``cfg.data_root`` alone changes nothing: each dataset's ``data_root`` and every
    evaluator ``ann_file`` that starts with the old root are rewritten.
    """
    data_root = data_root.rstrip('/') + '/'
    old_roots = set()
    for key in SPLITS.values():
        loader = cfg.get(key)
        if not loader:
            continue
        for ds in iter_datasets(loader['dataset']):
            if ds.get('data_root'):
                old_roots.add(ds['data_root'].rstrip('/') + '/')
            ds['data_root'] = data_root
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if not evaluators:
            continue
        for ev in evaluators if isinstance(evaluators, list) else [evaluators]:
            ann = ev.get('ann_file')
            for old in old_roots:
                if isinstance(ann, str) and ann.startswith(old):
                    ev['ann_file'] = data_root + ann[len(old):]
    cfg.data_root = data_root


def _dataset_paths(ds: ConfigDict) -> List[str]:
    root = ds.get('data_root') or ''
    paths = []
    if ds.get('ann_file'):
        paths.append(osp.join(root, ds['ann_file']))
    prefixes = ds.get('data_prefix') or {}
    for prefix in ([prefixes] if isinstance(prefixes, str) else prefixes.values()):
        if isinstance(prefix, str) and prefix:
            paths.append(osp.join(root, prefix))
    return paths or ([root] if root else [])


def check_datasets(cfg: Config, splits: List[str]) -> None:
    """Raise ``FileNotFoundError`` naming the expected layout when a dataset of ``splits`` is missing, and
    :class:`~mavit_mm.config.dataset_checks.DatasetError` naming the file and the fix when an annotation file
    is truncated or not JSON, or a COCO-format dataset would be empty after filtering
    (:func:`~mavit_mm.config.dataset_checks.check_annotations`)."""
    for split in splits:
        loader = cfg.get(SPLITS[split])
        if not loader:
            continue
        for ds in iter_datasets(loader['dataset']):
            missing = [p for p in _dataset_paths(ds) if p and not osp.exists(p)]
            if not missing:
                continue
            kind = ds.get('type', 'dataset')
            layout = DATASET_LAYOUTS.get(kind, '  {root} with ann_file and data_prefix as in the config')
            raise FileNotFoundError(
                f'The {split} dataset ({kind}) is not where the config says: {missing[0]} does not exist.\n'
                f'Expected layout:\n{layout.format(root=ds.get("data_root") or "<data_root>")}\n'
                'Prepare it as in docs/datasets.md, or point the config at your copy with '
                '--data-root /path/to/dataset (or --cfg-options).')
    check_annotations(cfg, splits)


def enable_visualization(cfg: Config, show_dir: Optional[str], show: bool = False) -> None:
    """Turn on the library's visualization hook for testing, saving drawings under ``show_dir``."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError('this config has no default_hooks.visualization to draw predictions with')
    scope = cfg.get('default_scope')
    if scope == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir, show=show)
        return
    hook.update(draw=True, show=show)
    if scope == 'mmdet':  # relative to work_dir/TIMESTAMP
        hook['test_out_dir'] = show_dir
    else:  # mmseg's hook draws every `interval`-th batch (50 by default) where its visualizer saves
        hook['interval'] = 1
        if show_dir:  # relative paths under work_dir, as mmdet's
            cfg.visualizer['save_dir'] = osp.join(cfg.work_dir, show_dir)


def enable_tta(cfg: Config) -> None:
    """Swap in the config's test-time augmentation (``tta_model`` + ``tta_pipeline``)."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise KeyError('--tta needs tta_model and tta_pipeline in the config (the stock mmdet / mmseg '
                       'base configs define them); this config has none')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def build_model(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` with the registry of the config's ``default_scope`` (mmdet, mmseg, mmpretrain).

    A top-level ``data_preprocessor`` (mmpretrain's configs put mean / std there) goes into the model
    as mmengine's Runner does it, so the model normalises its inputs as in training.
    """
    scope = cfg.get('default_scope', 'mmengine')
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        return importlib.import_module(f'{scope}.registry').MODELS.build(model_cfg)


#: Types this package registers; a config using one of them needs ``custom_imports`` of mavit_mm.
OWN_TYPES = ('MAViT', 'MALAttention', 'RoPESoftmaxAttention', 'MAViTClsHead')
CUSTOM_IMPORTS_HINT = "custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)"


def check_custom_imports(cfg: Config) -> None:
    """Raise ``ValueError`` saying what to add when ``cfg.model`` uses mavit_mm types it never imports.

    Our tools import mavit_mm themselves, but the stock mmdet / mmseg / mmpretrain tools and a
    user's own scripts only see what the config imports: a config that works here must work there.
    """
    used = sorted({t.split('.')[-1] for t in used_types(cfg.get('model', {})) if t.split('.')[-1] in OWN_TYPES})
    if not used:
        return
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if any(m == 'mavit_mm' or m.startswith('mavit_mm.') for m in imports):
        return
    extra = " (and 'mavit_mm.classification' first for mmpretrain configs)" if 'MAViTClsHead' in used else ''
    raise ValueError(
        f'{cfg.filename or "the config"} uses {", ".join(used)} from mavit-mm but does not import it, so '
        f'mmengine\'s registry will not know {used[0]!r} outside our tools. Add this line to the config{extra}:\n'
        f'    {CUSTOM_IMPORTS_HINT}')


AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def train_in_fp32(cfg: Config) -> bool:
    """Turn an ``AmpOptimWrapper`` into a plain ``OptimWrapper`` (same optimizer and param groups, fp32).

    mmengine's AmpOptimWrapper refuses to be built without a GPU; tools/train.py calls this on machines
    without CUDA so that the paper's mixed-precision configs still train (on CPU, in fp32). Returns whether
    anything changed.
    """
    return fp32_optim_wrapper(cfg.get('optim_wrapper'))


def fp32_optim_wrapper(wrapper: Optional[dict]) -> bool:
    """:func:`train_in_fp32` on an ``optim_wrapper`` config dict, in place."""
    if not wrapper or wrapper.get('type') != 'AmpOptimWrapper':
        return False
    wrapper['type'] = 'OptimWrapper'
    for key in AMP_ONLY_KEYS:
        wrapper.pop(key, None)
    return True


def use_atomic_checkpoints(cfg: Config) -> None:
    """Make the CheckpointHook write through mmengine's ``local_atomic`` backend (temporary file + rename).

    Only where the user set no backend of their own and checkpoints go to a local folder.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args'):
        return
    out_dir = hook.get('out_dir') or cfg.get('work_dir') or ''
    if '://' in str(out_dir):
        return
    hook['backend_args'] = dict(backend='local_atomic')


MODEL_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def load_config(path: str) -> Config:
    """A config from a file or from an installed package (``'mmdet::faster_rcnn/...py'``)."""
    if '::' in path:
        from mmengine.hub import get_config
        return get_config(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path!r} does not exist')
    return Config.fromfile(path)


def load_model_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """A config for building its model without weights (analysis tools): checked, options merged,
    the backbone's Pretrained init dropped. Raises ``FileNotFoundError`` / ``ValueError`` saying what is wrong."""
    cfg = load_config(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('default_scope') not in MODEL_SCOPES:
        raise ValueError(f'{path}: default_scope {cfg.get("default_scope")!r} is not one of {MODEL_SCOPES}')
    if cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None
    return cfg


def add_cuda_graph_hook(cfg: Config, mode: str, module: str = 'backbone') -> None:
    """Append ``CUDAGraphHook(module, mode)`` (:mod:`mavit_mm.engine.cuda_graphs`) to ``cfg.custom_hooks``,
    replacing one the config already has for the same module (whose ``max_graphs`` and ``capture_after`` it keeps)."""
    hooks, extra = [], {}
    for h in cfg.get('custom_hooks', None) or []:
        if h.get('type') == 'CUDAGraphHook' and h.get('module', 'backbone') == module:
            extra = {k: h[k] for k in ('max_graphs', 'capture_after') if k in h}
        else:
            hooks.append(h)
    cfg.custom_hooks = hooks + [dict(type='CUDAGraphHook', module=module, mode=mode, **extra)]


def add_loader_shutdown_hook(cfg: Config) -> None:
    """Append :class:`~mavit_mm.engine.loader_workers.LoaderWorkersShutdownHook` to ``cfg.custom_hooks`` where a
    dataloader pins memory with persistent workers (otherwise the process waits 5 s per worker at exit)."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    if needs_shutdown(cfg) and not any(h.get('type') == 'LoaderWorkersShutdownHook' for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='LoaderWorkersShutdownHook')]


def _run_config(config: str, cfg_options: Optional[dict], data_root: Optional[str], launcher: str,
                work_dir: Optional[str]) -> Config:
    """The steps tools/train.py and tools/test.py share: load, check imports, options, data root, launch,
    work dir."""
    cfg = load_config(config)
    check_custom_imports(cfg)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root:
        set_data_root(cfg, data_root)
    prepare_distributed(cfg, launcher)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def train_config(config: str,
                 *,
                 work_dir: Optional[str] = None,
                 resume: Optional[str] = None,
                 amp: bool = False,
                 cuda_graphs: Optional[str] = None,
                 fast_train: bool = False,
                 auto_scale_lr: bool = False,
                 data_root: Optional[str] = None,
                 no_validate: bool = False,
                 profile: Optional[int] = None,
                 profile_start: int = 20,
                 log_input_shapes: bool = False,
                 cfg_options: Optional[dict] = None,
                 launcher: str = 'none') -> Config:
    """The config ``tools/train.py`` hands mmengine's Runner: ``config`` with the tool's switches applied (each
    as its option in ``tools/train.py --help`` says), every change of ``--fast-train`` logged, checkpoints
    written atomically, and the datasets of the run checked. ``resume``: ``'auto'`` (the latest checkpoint in
    the work dir) or a checkpoint file."""
    cfg = _run_config(config, cfg_options, data_root, launcher, work_dir)
    if amp and cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if cuda_graphs:
        add_cuda_graph_hook(cfg, cuda_graphs)
    if fast_train or cfg.get('fast_train', False):
        # the config's opt-in keeps the stock sampler (a GPU draws another random stream); --fast-train all
        origin = '--fast-train' if fast_train else "the config's fast_train=True"
        for change in apply_fast_train(cfg, sampler=fast_train):
            print_log(f'{origin}: {change}', logger='current')
    if auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise KeyError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        check_checkpoint_file(resume)
        cfg.resume, cfg.load_from = True, resume
    if cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from)
    if no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if profile:
        add_profiling(cfg, profile, profile_start)
    if log_input_shapes:
        add_input_shape_log(cfg)
    if not torch.cuda.is_available() and train_in_fp32(cfg):
        print_log(
            "no CUDA device: training in fp32 (mmengine's AmpOptimWrapper needs a GPU; the config asks "
            'for mixed precision)',
            logger='current',
            level=logging.WARNING)
    use_atomic_checkpoints(cfg)
    add_loader_shutdown_hook(cfg)
    check_datasets(cfg, run_splits(cfg, 'train'))
    return cfg


def test_config(config: str,
                checkpoint: str,
                *,
                work_dir: Optional[str] = None,
                show: bool = False,
                show_dir: Optional[str] = None,
                tta: bool = False,
                cuda_graphs: Optional[str] = None,
                data_root: Optional[str] = None,
                cfg_options: Optional[dict] = None,
                launcher: str = 'none') -> Config:
    """The config ``tools/test.py`` hands mmengine's Runner to evaluate ``checkpoint`` (a file or a URL),
    with the tool's switches applied and the test dataset checked."""
    if not osp.isfile(checkpoint) and '://' not in checkpoint:
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    check_checkpoint_file(checkpoint)
    cfg = _run_config(config, cfg_options, data_root, launcher, work_dir)
    if cuda_graphs:
        add_cuda_graph_hook(cfg, cuda_graphs)
    cfg.load_from = checkpoint
    if show or show_dir:  # after work_dir: relative show dirs go under it
        enable_visualization(cfg, show_dir, show)
    if tta:
        enable_tta(cfg)
    add_loader_shutdown_hook(cfg)
    check_datasets(cfg, run_splits(cfg, 'test'))
    return cfg


def run_splits(cfg: Config, mode: str) -> List[str]:
    """The dataset splits a run of ``mode`` (``'train'`` or ``'test'``) of a prepared config reads: train and
    val (unless validation is off), or test."""
    if mode == 'test':
        return ['test']
    return ['train', 'val'] if cfg.get('val_dataloader') else ['train']

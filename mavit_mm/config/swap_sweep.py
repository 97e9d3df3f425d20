"""The swap tool over every config an installed mmdet / mmseg ships: ``tools/misc/swap_sweep.py``.

Each config under ``<package>/.mim/configs`` (``_base_`` folders aside) is swapped to MAViT as
``tools/misc/swap_backbone.py`` does and the new model built (SyncBN as BN); optionally the whole model
runs once in ``'tensor'`` mode on a 128 x 128 image.
Outcomes:

- ``swapped``: the new config builds (and runs);
- ``refused``: :func:`~mavit_mm.config.backbone_swap.swap_backbone` declines, with its reason (no stride
  pyramid, strides MAViT lacks, channels it cannot map);
- ``not a backbone model``: the config has no ``model.backbone`` (dataset / schedule / runtime files,
  backbone-free models);
- ``stock config unusable here``: the stock config itself does not load, or its own model does not
  build or run in this environment (a package it needs is missing, e.g. ``transformers`` for GLIP; an op
  without a CPU kernel; a teacher checkpoint to download): nothing the swap tool can fix;
- ``failed``: anything else: a defect of the swap tool.
"""
import copy
import glob
import importlib
import os.path as osp
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from typing import Dict, List, Optional

import torch
from torch import nn

from mavit_mm.utils.config_walk import replace_types

OUTCOMES = ('swapped', 'refused', 'not a backbone model', 'stock config unusable here', 'failed')
PACKAGES = ('mmdet', 'mmseg')


def stock_configs(package: str) -> List[str]:
    """``package::family/name.py`` for each config the installed package ships, sorted."""
    root = osp.join(osp.dirname(importlib.import_module(package).__file__), '.mim', 'configs')
    paths = sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True))
    return [f'{package}::' + osp.relpath(p, root) for p in paths if '_base_' not in p.split(osp.sep)]


def family(config: str) -> str:
    """``mmdet::faster_rcnn`` for ``mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``."""
    return config.split('/')[0]


def one_per_family(configs: List[str]) -> List[str]:
    """The first config (by name) of each family."""
    first: Dict[str, str] = {}
    for c in configs:
        first.setdefault(family(c), c)
    return list(first.values())


def _short(e: BaseException) -> str:
    return f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'


def sweep_one(config: str, arch: str = 'tiny', forward: bool = False) -> Dict[str, object]:
    """Swap, build and optionally run one stock config; ``{config, family, outcome, reason, seconds}``."""
    from mmengine.config import Config

    from mavit_mm.config.backbone_swap import render_config, stock_outputs, swap_backbone
    from mavit_mm.config.run_config import load_config
    start = time.perf_counter()
    row: Dict[str, object] = dict(config=config, family=family(config), reason='')

    def done(outcome: str, reason: str = '') -> Dict[str, object]:
        row.update(outcome=outcome, reason=reason, seconds=round(time.perf_counter() - start, 2))
        return row

    try:
        cfg = load_config(config)
    except Exception as e:  # noqa: BLE001  (the stock file itself)
        return done('stock config unusable here', f'loading: {_short(e)}')
    model_cfg = cfg.get('model')
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get('backbone'), dict):
        return done('not a backbone model')
    try:
        stock_outputs(cfg)
    except ValueError as e:
        return done('refused', str(e))
    except Exception as e:  # noqa: BLE001  (a stock backbone that needs what is not installed)
        return done('stock config unusable here', f'stock backbone: {_short(e)}')
    try:
        overrides = swap_backbone(cfg, arch)
    except ValueError as e:
        return done('refused', str(e))
    except Exception as e:  # noqa: BLE001
        return done('failed', f'swap: {_short(e)}\n{traceback.format_exc(limit=3)}')
    try:
        with tempfile.TemporaryDirectory() as tmp:  # the file the tool writes, read back as the user would
            path = osp.join(tmp, 'swapped.py')
            with open(path, 'w') as f:
                f.write(render_config(config, path, overrides))
            new = Config.fromfile(path)
        _build_and_run(new, forward)
    except Exception as e:  # noqa: BLE001
        try:  # the same with the stock backbone: a failure of the stock model here is not the swap's
            _build_and_run(cfg, forward)
        except Exception as stock_error:  # noqa: BLE001
            return done('stock config unusable here', f'stock model: {_short(stock_error)}')
        return done('failed', f'{_short(e)}\n{traceback.format_exc(limit=-3)}')
    return done('swapped')


def _build_and_run(cfg, forward: bool) -> None:
    from mavit_mm.config.run_config import build_model
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.pop('pretrained', None)
    cfg.model.pop('pretrained', None)
    replace_types(cfg.model, {'SyncBN': 'BN'})  # SyncBN (norm_cfg) builds only in a process group
    model = build_model(cfg).eval()
    if forward:
        # behind a neck the swap changes nothing (and a 1203-class LVIS cascade's mask heads on 1000
        # proposals take gigabytes): backbone and neck then; the whole model where heads read the backbone
        scope = cfg.get('default_scope', 'mmdet')
        # mmseg's MaskFormer / Mask2Former heads have no 'tensor' mode: predict, as a user's test would
        forward_once(
            model, scope, heads=getattr(model, 'neck', None) is None, mode='predict' if scope == 'mmseg' else 'tensor')


def forward_once(model: nn.Module, scope: str, size: int = 128, heads: bool = True, mode: str = 'tensor'):
    """One forward in ``mode`` ('tensor': raw head outputs; 'predict'; ``heads=False``: only ``extract_feat``,
    the backbone and neck) through the model's own data preprocessor, on a ``size`` x ``size`` image (mmdet:
    with 3 boxes and masks, ``demo_mm_inputs``)."""
    from mmengine.registry import DefaultScope
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, size, size)], with_mask=True)
    else:
        from mmseg.structures import SegDataSample
        meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))
        packed = dict(
            inputs=[torch.randint(0, 255, (3, size, size), dtype=torch.uint8)],
            data_samples=[SegDataSample(metainfo=meta)])
    with DefaultScope.overwrite_default_scope(scope), torch.no_grad():
        data = model.data_preprocessor(packed, False)
        if not heads:
            return model.extract_feat(data['inputs'])
        return model(data['inputs'], data.get('data_samples'), mode=mode)


def _read_metafiles_once() -> None:
    """Parse each package metafile once per process. mmengine resolves a ``'mmdet::'`` config name by reading
    every ``metafile.yml`` the package lists (some 200 YAML files, about half a second on a CPU core), for each
    name it resolves; a sweep resolves two per config. The files do not change during a sweep, so this keeps
    mmengine's own reader and reuses what it read (read-only: mmengine only looks entries up)."""
    import functools

    import mmengine.config.utils as config_utils
    if not hasattr(config_utils.load, 'cache_info'):
        config_utils.load = functools.lru_cache(maxsize=None)(config_utils.load)


def _worker_init() -> None:
    import mavit_mm  # noqa: F401  (registers MAViT in the fresh interpreter)
    torch.set_num_threads(1)  # one core a worker
    _read_metafiles_once()


def sweep(configs: List[str],
          arch: str = 'tiny',
          forward: bool = False,
          log=print,
          workers: int = 1) -> List[Dict[str, object]]:
    """:func:`sweep_one` over ``configs`` in ``workers`` processes (fresh interpreters), logging one line
    each as they finish; rows in the order of ``configs``."""

    def report(i: int, row: Dict[str, object]) -> None:
        log(f'[{i + 1}/{len(configs)}] {row["outcome"]:26s} {row["config"]}' +
            (f'  ({str(row["reason"]).splitlines()[0][:120]})' if row['reason'] else ''))

    if workers <= 1:
        _read_metafiles_once()
        rows = []
        for i, c in enumerate(configs):
            rows.append(sweep_one(c, arch, forward))
            report(i, rows[-1])
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    ctx = multiprocessing.get_context('spawn')  # no forked copies of a process that holds torch threads
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(sweep_one, c, arch, forward): i for i, c in enumerate(configs)}
        results: Dict[int, Dict[str, object]] = {}
        for n, future in enumerate(as_completed(futures)):
            results[futures[future]] = future.result()
            report(n, results[futures[future]])
    return [results[i] for i in range(len(configs))]


def counts(rows: List[Dict[str, object]]) -> Dict[str, int]:
    c = Counter(r['outcome'] for r in rows)
    return {k: c.get(k, 0) for k in OUTCOMES}


def markdown_table(rows: List[Dict[str, object]], packages: Optional[Dict[str, str]] = None) -> str:
    """Per family: configs swapped / refused / not a backbone model / unusable here / failed, and the reasons."""
    by_family = defaultdict(list)
    for r in rows:
        by_family[r['family']].append(r)
    lines = [
        '| family | configs | ' + ' | '.join(OUTCOMES) + ' | why not swapped |',
        '|---|---:|' + '---:|' * len(OUTCOMES) + '---|'
    ]
    for fam in sorted(by_family):
        rs = by_family[fam]
        c = counts(rs)
        reasons = sorted({_reason_kind(r) for r in rs if r['outcome'] not in ('swapped', 'not a backbone model')})
        lines.append(f'| {fam} | {len(rs)} | ' + ' | '.join(str(c[k])
                                                            for k in OUTCOMES) + ' | ' + '; '.join(reasons) + ' |')
    total = counts(rows)
    lines.append(f'| **all** | {len(rows)} | ' + ' | '.join(str(total[k]) for k in OUTCOMES) + ' | |')
    return '\n'.join(lines)


def _reason_kind(row: Dict[str, object]) -> str:
    """A reason without its numbers and names, so a family's many configs share one."""
    text = str(row['reason']).splitlines()[0]
    if row['outcome'] == 'refused':
        for key in ('cascaded decode heads', 'single-scale', 'not one map per stride', 'strides', 'stride(s)',
                    'stage widths', 'share a width', 'does not output', 'no neck or head', 'returns one tensor',
                    'passes the backbone'):
            if key in text:
                return {
                    'cascaded decode heads': 'cascaded heads would read maps of different strides',
                    'single-scale': 'single-scale backbone',
                    'not one map per stride': 'several maps per stride',
                    'strides': 'strides MAViT lacks',
                    'stride(s)': 'strides MAViT lacks',
                    'stage widths': 'a head reads a width that is no stage width',
                    'share a width': 'two stages share a width',
                    'does not output': 'backbone outputs no feature maps',
                    'no neck or head': 'no neck or head reads the backbone (C4 / shared RoI head, classifier, tracker)',
                    'returns one tensor': 'backbone returns one tensor (real-time nets)',
                    'passes the backbone': "neck passes the backbone's maps on (SSD)"
                }[key]
    return text.replace('|', '/')[:100]

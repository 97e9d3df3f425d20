"""The training recipes of the authors' release (github.com/qhfan/MALA), by the name of our config.

Each entry is read off the release's files (mmdet 2.x / mmseg 0.x / timm-DeiT era); ``source`` names them.
Values use the same vocabulary as :func:`mavit_mm.analysis.recipe.effective_recipe`, so the two compare
field by field. Conventions of that era that a value relies on:

- mmdet 2.x ``fp16 = dict()`` builds mmcv's ``Fp16OptimizerHook`` with its default ``loss_scale=512.``,
  which on torch >= 1.6 is a ``GradScaler`` reset to 512 after every step: a *static* loss scale.
- mmdet 2.x ``schedule_1x.py``: step policy, linear warm-up of 500 iterations from ratio 0.001.
- mmcv 1.x ``PolyLrUpdaterHook`` with warm-up multiplies the poly lr of the current iteration by the
  warm-up factor: the poly curve runs over the whole schedule from iteration 0.
- mmcv 1.x ``paramwise_cfg``: custom keys match parameter names as substrings (as mmengine's do);
  ``norm_decay_mult`` applies to norm layers that no custom key matched.
- DeiT's ``main.py`` (classification): timm's cosine scheduler stepped once per epoch, warm-up from
  ``warmup_lr`` over ``warmup_epochs`` with the cosine *not* restarted after it (``warmup_prefix=False``);
  timm's optimizer factory puts no weight decay on 1-D parameters and biases; ``ModelEma`` decay
  ``d ** (total_batch / 512)`` per iteration, buffers averaged too.
"""
from typing import Any, Dict

# Stochastic depth of the release's dense-prediction configs (the same for every framework).
DENSE_DROP_PATH = {'t': 0.1, 's': 0.15, 'b': 0.4, 'l': 0.55}
MMCV_NORM_KEYS = {
    'absolute_pos_embed': dict(decay_mult=0.),
    'relative_position_bias_table': dict(decay_mult=0.),
    'norm': dict(decay_mult=0.)
}
STATIC_512 = 'fp16, static loss scale 512'
DETR_MS_CROP = 'flip; one of: resize short side 480..800/32 (long <= 1333) | resize 400/500/600, ' \
               'crop 384..600, resize 480..800/32'
ADE_CROP = 'resize 2048x512 x0.5-2.0; crop 512x512 (cat_max 0.75); flip; photometric distortion'


def _det(arch: str, family: str) -> Dict[str, Any]:
    big = arch == 'l' and family in ('mask_rcnn_3x', 'cascade_3x')
    file = {
        'retinanet': f'retinanet_{arch}_1x.py',
        'mask_rcnn_1x': f'maskrcnn_{arch}_1x.py',
        'mask_rcnn_3x': f'maskrcnn_{arch}_3x.py',
        'cascade_3x': f'casrcnn_{arch}_3x.py'
    }[family]
    base = {'retinanet': 'MALA_retinanet.py', 'cascade_3x': 'MALA_cas_rcnn.py'}.get(family, 'MALA_rcnn.py')
    recipe = dict(
        source=f'detect/configs/MALA/{file} (+ _base_/models/{base}, mmdet 2.x schedule_1x.py, '
        'coco_detection/coco_instance.py)',
        drop_path_rate=DENSE_DROP_PATH[arch],
        backbone_norm='SyncBN',
        batch=(8, 1 if big else 2),
        optimizer=dict(
            type='AdamW',
            lr=2e-4 if big else 4e-4,
            betas=(0.9, 0.999),
            weight_decay=1e-4 if family == 'retinanet' else 0.05),
        paramwise=None if family == 'retinanet' else dict(custom_keys=MMCV_NORM_KEYS),
        precision=STATIC_512,
        schedule=dict(
            policy='step',
            steps=[8, 11] if family in ('retinanet', 'mask_rcnn_1x') else [27, 33],
            epochs=12 if family in ('retinanet', 'mask_rcnn_1x') else 36,
            warmup_iters=500,
            warmup_ratio=0.001),
        train_pipeline='resize 1333x800 (keep ratio); flip' if family in ('retinanet',
                                                                          'mask_rcnn_1x') else DETR_MS_CROP,
        sampler='aspect-ratio groups',
        ema=None,
        val_interval='1 epoch',
    )
    if family == 'cascade_3x':
        recipe['paramwise'] = dict(norm_decay_mult=0., custom_keys={**MMCV_NORM_KEYS, 'rpe_table': dict(decay_mult=0.)})
        recipe['head_norms'] = 'SyncBN'
    return recipe


def _seg(arch: str, family: str) -> Dict[str, Any]:
    if family == 'sem_fpn':
        return dict(
            source=f'segmentation/configs/MALA/FPN_{arch}_1x.py (+ _base_/models/MALA_fpn.py; the base '
            'schedule_80k.py is not in the release listing: the authors\' RMT repository\'s, same layout)',
            drop_path_rate=DENSE_DROP_PATH[arch],
            backbone_norm='SyncBN',
            batch=(8, 2),
            optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
            paramwise=None,
            precision='fp32',
            schedule=dict(policy='poly', power=0.9, min_lr=1e-6, iters=80000),
            train_pipeline=ADE_CROP,
            sampler='shuffle',
            ema=None,
            val_interval='4000 iters')
    return dict(
        source=f'segmentation/configs/MALA/Uper_{arch}_2x.py (+ _base_/models/MALA_upper.py)',
        drop_path_rate=DENSE_DROP_PATH[arch],
        backbone_norm='SyncBN',
        head_norms='SyncBN',
        batch=(8, 1 if arch == 'l' else 2),
        optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
        paramwise=dict(custom_keys=MMCV_NORM_KEYS),
        precision=STATIC_512,
        schedule=dict(policy='poly', power=1.0, min_lr=0.0, iters=160000, warmup_iters=1500, warmup_ratio=1e-6),
        train_pipeline=ADE_CROP,
        sampler='shuffle',
        ema=None,
        val_interval='8000 iters')


def _cls(arch: str) -> Dict[str, Any]:
    return dict(
        source='classfication_release/main.py defaults, run.sh; stochastic depth: the paper (Sec. 4.1)',
        drop_path_rate={
            't': 0.1,
            's': 0.15,
            'b': 0.4,
            'l': 0.55
        }[arch],
        backbone_norm='BN (SyncBN across GPUs)',
        batch=(8, 128),
        optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),  # 5e-4 x 1024 / 512
        paramwise='timm',
        precision='fp16, dynamic loss scale',
        schedule=dict(policy='timm_cosine', epochs=300, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5),
        train_pipeline='random resized crop 224 (bicubic); flip; RandAugment m9 mstd0.5; random erasing 0.25; '
        'mixup 0.8 / cutmix 1.0; label smoothing 0.1',
        sampler='repeated augmentation x3',
        ema=0.99996**(1024 / 512),
        val_interval='1 epoch',
    )


def _release() -> Dict[str, Dict[str, Any]]:
    table: Dict[str, Dict[str, Any]] = {}
    for a in 'tsbl':
        table[f'retinanet_mavit-{a}_fpn_1x_coco'] = _det(a, 'retinanet')
        table[f'mask-rcnn_mavit-{a}_fpn_1x_coco'] = _det(a, 'mask_rcnn_1x')
        table[f'fpn_mavit-{a}_8xb2-80k_ade20k-512x512'] = _seg(a, 'sem_fpn')
        table[f'upernet_mavit-{a}_8x{"b1" if a == "l" else "b2"}-160k_ade20k-512x512'] = _seg(a, 'upernet')
        table[f'mavit-{a}_8xb128_in1k'] = _cls(a)
    for a in 'sbl':
        table[f'mask-rcnn_mavit-{a}_fpn_ms-crop-3x_coco'] = _det(a, 'mask_rcnn_3x')
        table[f'cascade-mask-rcnn_mavit-{a}_fpn_4conv1fc-giou_ms-crop-3x_coco'] = _det(a, 'cascade_3x')
    return table


RELEASE_RECIPES: Dict[str, Dict[str, Any]] = _release()

# Differences from the release that are kept on purpose, by recipe family (:func:`config_family`):
# field -> why, how to get the release's behaviour back, and for 'schedule' the largest relative lr
# difference over the whole schedule that the reason covers (a larger one is reported as a difference).
_WARMUP_500 = dict(
    reason="mmengine's LinearLR(end=500), the stock mmdet 3.x form of mmdet 2.x's 500-iteration warm-up, "
    'reaches the full lr at iteration 499 instead of 500, so the lr is up to 0.2 % higher during the '
    'warm-up and equal after it; for the exact mmcv 1.x curve: param_scheduler[0].end=501',
    within=0.0021)
DELIBERATE: Dict[str, Dict[str, dict]] = {
    'retinanet': {
        'schedule': _WARMUP_500
    },
    'mask-rcnn': {
        'schedule': _WARMUP_500
    },
    'cascade-mask-rcnn': {
        'schedule': _WARMUP_500
    },
    'upernet': {
        'schedule': dict(
            reason="mmengine's LinearLR(end=1500) and PolyLR(end=160000), the stock mmseg 1.x forms, reach their "
            'end values one iteration before mmcv 1.x does (up to 0.07 % of the base lr higher during the '
            'warm-up, a few 1e-6 lower in the last iterations); for the exact curves: end=1501 and end=160001',
            within=0.0007)
    },
    'fpn': {
        'schedule': dict(
            reason="mmengine's PolyLR(end=80000), the stock mmseg 1.x form, reaches eta_min at iteration 79999, one "
            'before mmcv 1.x does: the lr is lower by at most 4e-5 of the base lr, in the last iterations; '
            'for the exact curve: param_scheduler[0].end=80001',
            within=5e-5)
    },
}


def config_family(config_name: str) -> str:
    """The recipe family of a config name: ``imagenet``, or its detector / segmentor (``mask-rcnn``, ...)."""
    head = config_name.split('_')[0]
    return 'imagenet' if head.startswith('mavit-') else head

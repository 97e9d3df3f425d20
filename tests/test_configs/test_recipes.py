"""Every paper config trains as the authors' release does, or says why not (docs/recipes.md).

The release's recipes are a table read off its files (mavit_mm/analysis/release_recipes.py); ours are
resolved from the configs and counted on the built models. The lr checks below are written out by hand
from mmcv 1.x's hook formulas, independently of both.
"""
import glob
import math
import os.path as osp

import pytest
from mmengine.logging import MMLogger

from mavit_mm.analysis.recipe import compare_with_release, effective_recipe, format_rows, lr_curve, undocumented
from mavit_mm.analysis.release_recipes import DELIBERATE, RELEASE_RECIPES
from mavit_mm.config.run_config import build_model, load_config
from helpers import ROOT

FOLDERS = ('retinanet', 'mask_rcnn', 'cascade_rcnn', 'sem_fpn', 'upernet', 'imagenet')
CONFIGS = sorted(p for f in FOLDERS for p in glob.glob(osp.join(ROOT, 'configs', f, '*.py')))


@pytest.fixture(autouse=True, scope='module')
def _quiet_optimizer_constructor():
    """mmengine logs three lines per parameter when it builds param groups: thousands per config."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    yield
    logger.setLevel(level)


def name_of(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def load(path: str):
    cfg = load_config(path)
    cfg.model.backbone.init_cfg = None
    return cfg


def test_every_paper_config_has_a_release_recipe():
    assert len(CONFIGS) == 26  # 22 detection / segmentation + 4 ImageNet
    assert sorted(map(name_of, CONFIGS)) == sorted(RELEASE_RECIPES)


@pytest.mark.parametrize('path', CONFIGS, ids=name_of)
def test_recipe_equals_the_release_or_the_difference_is_documented(path):
    cfg = load(path)
    rows = compare_with_release(cfg, name_of(path), build_model(cfg))
    assert not undocumented(rows), format_rows(name_of(path), rows)
    assert {r.field for r in rows} >= {'optimizer', 'param_groups', 'schedule', 'precision', 'batch'}


def test_a_changed_recipe_is_caught():
    path = osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py')
    cfg = load(path)
    cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.optim_wrapper.paramwise_cfg = dict(norm_decay_mult=0.0)
    cfg.param_scheduler[1].milestones = [8, 10]
    rows = compare_with_release(cfg, name_of(path), build_model(cfg))
    assert {r.field for r in undocumented(rows)} == {'precision', 'param_groups', 'schedule'}


def test_upernet_lr_is_warm_up_times_one_poly_curve_as_mmcv1():
    """mmcv 1.x PolyLrUpdaterHook(power=1, min_lr=0) + linear warm-up 1500 iters, ratio 1e-6, over 160k:
    lr(t) = 6e-5 * (1 - t / 160000) * (1e-6 + (1 - 1e-6) * t / 1500) while t < 1500, then without the factor."""
    cfg = load(osp.join(ROOT, 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py'))
    curve = lr_curve(cfg, 160000, 1)
    within = DELIBERATE['upernet']['schedule']['within']  # the documented one-iteration offset of mmengine's ends
    expected = {
        0: 1e-6,
        750: (1 - 750 / 160000) * (1e-6 + (1 - 1e-6) * 0.5),
        1499: (1 - 1499 / 160000) * (1e-6 + (1 - 1e-6) * 1499 / 1500),
        1500: 1 - 1500 / 160000,
        80000: 0.5,
        159999: 1 / 160000
    }
    for it, factor in expected.items():
        assert abs(curve[it] - factor) <= within, (it, curve[it], factor)  # a restarted poly: 5e-3 off at 80k


def test_mask_rcnn_1x_lr_steps_as_mmdet2_schedule_1x():
    """mmdet 2.x schedule_1x: linear warm-up 500 iters from 0.001, x0.1 at epochs 8 and 11."""
    cfg = load(osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'))
    recipe = effective_recipe(cfg, 'mask-rcnn_mavit-t_fpn_1x_coco')
    e = recipe['epoch_length']
    assert e == math.ceil(117266 / 16)
    curve = lr_curve(cfg, recipe['total_iters'], e)
    within = DELIBERATE['mask-rcnn']['schedule']['within']  # LinearLR's end is one iteration earlier
    expected = {
        0: 0.001,
        250: 0.001 + 0.999 * 0.5,
        499: 1 - 0.999 / 500,
        500: 1.0,
        8 * e - 1: 1.0,
        8 * e: 0.1,
        11 * e - 1: 0.1,
        11 * e: 0.01,
        12 * e - 1: 0.01
    }
    for it, factor in expected.items():
        assert abs(curve[it] - factor) <= within, (it, curve[it], factor)
        if it >= 500:
            assert math.isclose(curve[it], factor, rel_tol=1e-9), (it, curve[it], factor)


def test_retinanet_decays_every_parameter_and_uses_a_static_loss_scale():
    path = osp.join(ROOT, 'configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py')
    cfg = load(path)
    recipe = effective_recipe(cfg, name_of(path), build_model(cfg))
    assert all(wd == 1e-4 for _, wd in recipe['_decay'].values())
    assert recipe['precision'] == 'fp16, static loss scale 512'


def test_imagenet_lr_is_timm_cosine_stepped_per_epoch():
    """DeiT main.py: timm CosineLRScheduler(t_initial=300, warmup_t=5, warmup_lr_init=1e-6, lr_min=1e-5),
    step(epoch) once per epoch: lr(e) = 1e-6 + e (1e-3 - 1e-6) / 5 for e < 5, else
    1e-5 + (1e-3 - 1e-5) (1 + cos(pi e / 300)) / 2."""
    cfg = load(osp.join(ROOT, 'configs/imagenet/mavit-s_8xb128_in1k.py'))
    e = 1251
    curve = lr_curve(cfg, 300 * e, e)
    for epoch, lr in {
            0: 1e-6,
            1: 1e-6 + 0.999e-3 / 5,
            4: 1e-6 + 4 * 0.999e-3 / 5,
            5: 1e-5 + 0.99e-3 * (1 + math.cos(math.pi / 60)) / 2,
            150: 1e-5 + 0.99e-3 / 2,
            299: 1e-5 + 0.99e-3 * (1 + math.cos(math.pi * 299 / 300)) / 2
    }.items():
        for it in (epoch * e, epoch * e + e - 1):  # constant within the epoch
            assert math.isclose(1e-3 * curve[it], lr, rel_tol=1e-9), (epoch, it, 1e-3 * curve[it], lr)


def test_imagenet_trains_with_repeated_augmentation_ema_and_amp():
    recipe = effective_recipe(load(osp.join(ROOT, 'configs/imagenet/mavit-t_8xb128_in1k.py')), 'mavit-t_8xb128_in1k')
    assert recipe['sampler'] == 'repeated augmentation x3'
    assert math.isclose(recipe['ema'], 0.99996**2, rel_tol=1e-12)
    assert recipe['precision'] == 'fp16, dynamic loss scale'
    assert recipe['epoch_length'] == 1281167 // 256 * 256 // 1024 == 1251  # DeiT's RASampler + drop_last

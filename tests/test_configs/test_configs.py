"""Every detection / segmentation config builds its model with the paper's parameter count and runs a
forward; the toy configs build. (ImageNet configs: tests/test_models/test_classification.py.)"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mavit_mm.config.run_config import build_model
from mavit_mm.config.swap_sweep import forward_once as tensor_forward
from helpers import ROOT

DENSE_FOLDERS = ('retinanet', 'mask_rcnn', 'cascade_rcnn', 'sem_fpn', 'upernet')
PAPER_CONFIGS = sorted(f for d in DENSE_FOLDERS for f in glob.glob(osp.join(ROOT, 'configs', d, '*.py')))
TOY_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py')))

# The paper's Params (M), Tables 3-5, by config folder and arch letter.
PAPER_PARAMS = {
    ('retinanet', 't'): 24,
    ('retinanet', 's'): 34,
    ('retinanet', 'b'): 57,
    ('retinanet', 'l'): 104,
    ('mask_rcnn', 't'): 33,
    ('mask_rcnn', 's'): 44,
    ('mask_rcnn', 'b'): 67,
    ('mask_rcnn', 'l'): 114,
    ('cascade_rcnn', 's'): 82,
    ('cascade_rcnn', 'b'): 105,
    ('cascade_rcnn', 'l'): 152,
    ('sem_fpn', 't'): 18,
    ('sem_fpn', 's'): 28,
    ('sem_fpn', 'b'): 51,
    ('sem_fpn', 'l'): 98,
    ('upernet', 't'): 44,
    ('upernet', 's'): 55,
    ('upernet', 'b'): 77,
    ('upernet', 'l'): 125,
}


def paper_key(path: str):
    arch = osp.basename(path).split('mavit-')[1][0]
    return osp.basename(osp.dirname(path)), arch


def test_every_paper_row_has_a_config():
    folders = {osp.basename(d) for d in glob.glob(osp.join(ROOT, 'configs', '*')) if osp.isdir(d)}
    assert folders == set(DENSE_FOLDERS) | {'imagenet', 'toy'}
    assert {paper_key(f) for f in PAPER_CONFIGS} == set(PAPER_PARAMS)
    assert len(PAPER_CONFIGS) == len(PAPER_PARAMS) + 3  # + Mask R-CNN 3x for S, B, L
    ms3x = [f for f in PAPER_CONFIGS if osp.basename(f).startswith('mask-rcnn') and 'ms-crop-3x' in f]
    assert sorted(paper_key(f)[1] for f in ms3x) == ['b', 'l', 's']


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_builds_with_paper_params_and_runs(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mavit_mm'], allow_failed_imports=False)
    assert cfg.model.backbone.type == 'MAViT'
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert cfg.model.backbone.norm_cfg == dict(type='SyncBN')
    if 'rpn' in cfg.model.get('test_cfg', {}):  # 100 RoIs, not 1000, through the heads: same code path
        cfg.model.test_cfg.rpn.max_per_img = 100
    model = build_model(cfg).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params_m - PAPER_PARAMS[paper_key(path)]) <= 0.5, params_m
    out = tensor_forward(model, cfg.default_scope)
    flat = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    assert flat and all(torch.isfinite(t).all() for t in flat)


@pytest.mark.parametrize('path', TOY_CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_toy_configs_build(path):
    cfg = Config.fromfile(path)
    init = cfg.model.backbone.get('init_cfg')  # needs no download: from scratch or from the toy UperNet run
    assert init is None or init.checkpoint.startswith('work_dirs/toy_upernet/')
    tensor_forward(build_model(cfg).eval(), cfg.default_scope)


def test_detector_roi_features_read_plain_nchw_maps():
    """mmcv's RoIAlign reads its input as contiguous NCHW whatever its strides. The backbone's maps
    (and so the FPN's: convolutions keep the memory format) must be plain NCHW, or the RoI heads get
    scrambled features: with channels-last maps the toy detector's RoI classifier never left
    "background" (docs/dev/toy_detector_roi_layout.md). Checked against torchvision's independent RoIAlign,
    which honours strides."""
    tv_ops = pytest.importorskip('torchvision.ops')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask_rcnn', 'mask-rcnn_mavit-t_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg).eval()
    torch.manual_seed(0)
    # both boxes under 112 px (sqrt of the area): mmdet maps them to the stride-4 level
    rois = torch.tensor([[0., 4., 8., 60., 50.], [0., 30., 10., 120., 90.]])
    with DefaultScope.overwrite_default_scope('mmdet'), torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 96, 128))
        extractor = model.roi_head.bbox_roi_extractor
        got = extractor(feats[:extractor.num_inputs], rois)
    want = tv_ops.roi_align(
        feats[0].contiguous(), rois, output_size=7, spatial_scale=0.25, sampling_ratio=0, aligned=True)
    assert all(f.is_contiguous() for f in feats)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


SEG_T_CONFIGS = [
    osp.join(ROOT, 'configs', 'sem_fpn', 'fpn_mavit-t_8xb2-80k_ade20k-512x512.py'),
    osp.join(ROOT, 'configs', 'upernet', 'upernet_mavit-t_8xb2-160k_ade20k-512x512.py')
]


@pytest.mark.parametrize('path', SEG_T_CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_segmentation_configs_hooks_build_and_buckets_keep_the_outputs(path):
    """The segmentation configs' custom hooks resolve in mmseg's scope, and the model with its neck and head
    convolutions in size buckets (what ConvSizeBucketsHook does on CUDA) gives the outputs of the plain one
    on an image whose maps are no bucket size (200 x 200: the decode head's 50 x 50 maps pad to 56 x 56)."""
    import copy

    from mmseg.registry import HOOKS

    from mavit_mm.engine.conv_buckets import use_conv_size_buckets
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope('mmseg'):
        hooks = [type(HOOKS.build(h)).__name__ for h in cfg.custom_hooks]
    assert hooks == ['ConvSizeBucketsHook', 'CUDAGraphHook']
    assert cfg.custom_hooks[1] == dict(type='CUDAGraphHook', module='backbone', mode='train')
    model = build_model(cfg).eval()
    bucketed = copy.deepcopy(model)
    switched = use_conv_size_buckets(bucketed)
    assert switched and all(n.split('.')[0] in ('neck', 'decode_head', 'auxiliary_head') for n in switched)
    torch.manual_seed(0)
    plain_out = tensor_forward(model, 'mmseg', size=200)
    torch.manual_seed(0)
    bucketed_out = tensor_forward(bucketed, 'mmseg', size=200)
    assert plain_out.shape == bucketed_out.shape
    assert ((bucketed_out - plain_out).norm() / plain_out.norm()).item() < 1e-5


def test_detection_1x_configs_replay_the_backbone_from_training_graphs():
    """RetinaNet and Mask R-CNN 1x (every arch; single-scale resize: a few dozen common padded shapes) train
    the backbone from CUDA graphs for up to 48 shapes, the hook resolving in mmdet's scope; the multi-scale
    crop recipes (3x, Cascade: far more shapes) run eagerly."""
    from mmdet.registry import HOOKS
    graphed = sorted(
        glob.glob(osp.join(ROOT, 'configs', 'retinanet', '*.py')) +
        glob.glob(osp.join(ROOT, 'configs', 'mask_rcnn', '*_1x_coco.py')))
    assert len(graphed) == 8
    for path in graphed:
        cfg = Config.fromfile(path)
        assert cfg.custom_hooks == [dict(type='CUDAGraphHook', module='backbone', mode='train', max_graphs=48)]
        with DefaultScope.overwrite_default_scope('mmdet'):
            assert type(HOOKS.build(cfg.custom_hooks[0])).__name__ == 'CUDAGraphHook'
    eager = glob.glob(osp.join(ROOT, 'configs', 'mask_rcnn', '*ms-crop-3x*.py')) + glob.glob(
        osp.join(ROOT, 'configs', 'cascade_rcnn', '*.py'))
    assert len(eager) == 6
    for path in eager:
        assert not Config.fromfile(path).get('custom_hooks'), path


def test_cuda_graphs_switch_replaces_the_configs_hook_and_keeps_its_limit():
    """tools/train.py / test.py --cuda-graphs MODE: one CUDAGraphHook for the backbone, in MODE, with the
    config's own max_graphs and capture_after where it sets them; other hooks, and graph hooks of other
    modules, stay."""
    from mavit_mm.config.run_config import add_cuda_graph_hook
    cfg = Config(
        dict(custom_hooks=[
            dict(type='CUDAGraphHook', module='backbone', mode='train', max_graphs=32, capture_after=0),
            dict(type='ConvSizeBucketsHook')
        ]))
    add_cuda_graph_hook(cfg, 'all')
    assert cfg.custom_hooks == [
        dict(type='ConvSizeBucketsHook'),
        dict(type='CUDAGraphHook', module='backbone', mode='all', max_graphs=32, capture_after=0)
    ]
    cfg = Config(dict(custom_hooks=[dict(type='CUDAGraphHook', module='neck', mode='eval')]))
    add_cuda_graph_hook(cfg, 'train')
    assert cfg.custom_hooks == [
        dict(type='CUDAGraphHook', module='neck', mode='eval'),
        dict(type='CUDAGraphHook', module='backbone', mode='train')
    ]

"""The fast training path (``tools/train.py --fast-train``) against the stock components it replaces:
merged param groups update every parameter as one group per parameter does, the on-device sampler and
mask targets give the stock results, and whole detector training steps give the plain config's losses."""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from torch import nn

from mavit_mm.engine.fast_train import apply_fast_train
from mavit_mm.engine.optim_constructor import merge_param_groups
from mavit_mm.utils.config_walk import replace_types
from helpers import ROOT

CUDA = torch.cuda.is_available()
MASK_RCNN = f'{ROOT}/configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'
CASCADE = f'{ROOT}/configs/cascade_rcnn/cascade-mask-rcnn_mavit-s_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
UPERNET = f'{ROOT}/configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py'


class Tiny(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.norm = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.dw(self.norm(self.stem(x))).mean((2, 3)))


def _wrapper(model, constructor, **optimizer):
    cfg = dict(
        constructor=constructor,
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05, **optimizer),
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.5, custom_keys={'head': dict(lr_mult=0.1)}))
    return build_optim_wrapper(model, cfg)


def test_merge_param_groups_keeps_order_and_settings():
    p = [nn.Parameter(torch.zeros(1)) for _ in range(5)]
    groups = [
        dict(params=[p[0]], lr=1.0),
        dict(params=[p[1]], lr=1.0, weight_decay=0.0),
        dict(params=[p[2]], lr=1.0),
        dict(params=[p[3]], weight_decay=0.0, lr=1.0),
        dict(params=[p[4]], lr=0.1)
    ]
    merged = merge_param_groups(groups)
    assert [len(g['params']) for g in merged] == [2, 2, 1]
    assert merged[0]['params'][0] is p[0] and merged[0]['params'][1] is p[2]
    assert merged[1] == dict(params=[p[1], p[3]], lr=1.0, weight_decay=0.0)
    assert merged[2]['lr'] == 0.1


def test_grouped_constructor_updates_every_parameter_as_the_default_one():
    torch.manual_seed(0)
    ref_model = Tiny()
    model = copy.deepcopy(ref_model)
    ref = _wrapper(ref_model, 'DefaultOptimWrapperConstructor')
    ours = _wrapper(model, 'GroupedOptimWrapperConstructor')
    assert len(ref.optimizer.param_groups) == 8  # one per parameter
    # stem/dw weights, biases (decay 0.025), norm (decay 0), head weight and bias (lr 1e-3; decay as custom)
    assert len(ours.optimizer.param_groups) == 4
    assert not any(g.get('fused') for g in ours.optimizer.param_groups)  # CPU: no fused kernels asked for
    x = torch.randn(4, 3, 9, 9)
    initial = copy.deepcopy(ref_model.state_dict())
    for _ in range(3):
        for m, w in ((ref_model, ref), (model, ours)):
            w.update_params(m(x).square().mean())
    for (name, a), b in zip(ref_model.named_parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(a, initial[name]), name  # every parameter was updated


@pytest.mark.skipif(not CUDA, reason='fused optimizers run on CUDA tensors')
def test_grouped_constructor_fuses_on_cuda_unless_the_config_says_otherwise():
    model = Tiny().cuda()
    assert all(g['fused'] for g in _wrapper(model, 'GroupedOptimWrapperConstructor').optimizer.param_groups)
    kept = _wrapper(model, 'GroupedOptimWrapperConstructor', foreach=True).optimizer.param_groups
    assert all(g['foreach'] and not g.get('fused') for g in kept)


class SharedHead(nn.Module):
    """One linear layer reached through two parents (a tied weight, as in a config mistake)."""

    def __init__(self):
        super().__init__()
        shared = nn.Linear(4, 4)
        self.a = nn.Sequential(shared)
        self.b = nn.Sequential(nn.ReLU(), shared)

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize('constructor', ['DefaultOptimWrapperConstructor', 'GroupedOptimWrapperConstructor'])
def test_a_shared_parameter_is_refused_as_by_the_default_constructor(constructor):
    cfg = dict(
        constructor=constructor,
        optimizer=dict(type='SGD', lr=0.01, weight_decay=1e-4),
        paramwise_cfg=dict(bias_lr_mult=2.))
    with pytest.raises(ValueError, match='some parameters appear in more than one parameter group'):
        build_optim_wrapper(SharedHead(), cfg)


def test_a_shared_parameter_with_bypass_duplicate_is_updated_once():
    updated = []
    for constructor in ('DefaultOptimWrapperConstructor', 'GroupedOptimWrapperConstructor'):
        torch.manual_seed(0)
        model = SharedHead()
        before = model.a[0].weight.detach().clone()
        wrapper = build_optim_wrapper(
            model,
            dict(
                constructor=constructor,
                optimizer=dict(type='SGD', lr=0.01),
                paramwise_cfg=dict(bias_lr_mult=2., bypass_duplicate=True)))
        model.a[0].weight.grad = torch.ones_like(before)
        model.a[0].bias.grad = torch.zeros(4)
        wrapper.step()
        updated.append(model.a[0].weight.detach() - before)
    torch.testing.assert_close(updated[0], torch.full((4, 4), -0.01))  # lr x grad, once
    torch.testing.assert_close(updated[1], updated[0], rtol=0, atol=0)


def test_grouped_constructor_reports_the_lr_as_documented():
    """One value per merged group: the first (what mmengine logs) and the set of values are the stock ones."""
    ref = _wrapper(Tiny(), 'DefaultOptimWrapperConstructor')
    ours = _wrapper(Tiny(), 'GroupedOptimWrapperConstructor')
    for getter in ('get_lr', 'get_momentum'):
        stock, merged = getattr(ref, getter)(), getattr(ours, getter)()
        assert stock.keys() == merged.keys()
        for key in stock:
            assert merged[key][0] == stock[key][0]
            assert set(map(str, merged[key])) == set(map(str, stock[key]))
            if len(stock[key]) == len(ref.optimizer.param_groups):  # per group ('base_lr' is one value)
                assert len(merged[key]) == len(ours.optimizer.param_groups) < len(stock[key])


def test_replace_types_walks_nested_configs():
    node = dict(a=dict(type='mmdet.RandomSampler'), b=[dict(type='RandomSampler'), dict(type='Other')])
    assert replace_types(node, {'RandomSampler': 'DeviceRandomSampler'}) == 2
    assert node['a']['type'] == 'mmdet.DeviceRandomSampler' and node['b'][0]['type'] == 'DeviceRandomSampler'


def _types(node):
    if isinstance(node, dict):
        yield from ([node['type']] if isinstance(node.get('type'), str) else [])
        for v in node.values():
            yield from _types(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _types(v)


@pytest.mark.parametrize('config', [MASK_RCNN, CASCADE])
def test_apply_fast_train_on_detectors(config):
    cfg = Config.fromfile(config)
    changes = apply_fast_train(cfg, cuda=True)
    types = list(_types(cfg.model))
    assert 'RandomSampler' not in types and 'FCNMaskHead' not in types and 'MaxIoUAssigner' not in types
    assert types.count('DeviceRandomSampler') == (2 if config == MASK_RCNN else 4)  # RPN + each RCNN stage
    assert types.count('DeviceMaxIoUAssigner') == types.count('DeviceRandomSampler')
    assert cfg.optim_wrapper.constructor == 'GroupedOptimWrapperConstructor'
    assert cfg.train_dataloader.pin_memory and cfg.train_dataloader.persistent_workers
    assert cfg.model.data_preprocessor.non_blocking
    assert 'mavit_mm.models.det' in cfg.custom_imports.imports
    assert any('DeviceRandomSampler' in c for c in changes)
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)
    from mavit_mm.models.det import DeviceFCNMaskHead, DeviceMaxIoUAssigner, DeviceRandomSampler
    heads = model.roi_head.mask_head if config == CASCADE else [model.roi_head.mask_head]
    assert all(isinstance(h, DeviceFCNMaskHead) for h in heads)
    assert isinstance(model.rpn_head.sampler, DeviceRandomSampler)
    assert isinstance(model.rpn_head.assigner, DeviceMaxIoUAssigner)


def test_the_configs_opt_in_without_the_sampler():
    """The shipped configs set fast_train=True: tools/train.py applies every part but the device sampler (a GPU
    draws another random stream); the toy configs stay plain (they are the plain side of the parity tests)."""
    import glob
    for path in glob.glob(f'{ROOT}/configs/*/*.py'):
        assert Config.fromfile(path).get('fast_train', False) is ('/toy/' not in path), path
    cfg = Config.fromfile(MASK_RCNN)
    changes = apply_fast_train(cfg, cuda=True, sampler=False)
    types = list(_types(cfg.model))
    assert types.count('RandomSampler') == 2 and 'DeviceRandomSampler' not in types
    assert types.count('DeviceMaxIoUAssigner') == 2 and 'DeviceFCNMaskHead' in types
    assert cfg.optim_wrapper.constructor == 'GroupedOptimWrapperConstructor'
    assert not any('DeviceRandomSampler' in c for c in changes)


def _boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    return torch.from_numpy(np.concatenate([xy, xy + rng.uniform(4, 40, (n, 2))], 1)).float()


@pytest.mark.parametrize('settings', [
    dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False),
    dict(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.4), min_pos_iou=0.0, match_low_quality=True),
    dict(pos_iou_thr=0.6, neg_iou_thr=0.4, min_pos_iou=0.2, match_low_quality=True, gt_max_assign_all=False),
    dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=0.5),
])
@pytest.mark.parametrize('num_gts', [0, 1, 9])
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not CUDA, reason='GPU'))])
def test_device_assigner_equals_mmdet_max_iou_assigner(settings, num_gts, device):
    from mmdet.models.task_modules.assigners import MaxIoUAssigner

    from mavit_mm.models.det import DeviceMaxIoUAssigner
    rng = np.random.RandomState(num_gts)
    priors = _boxes(rng, 400)
    gts = _boxes(rng, num_gts)
    if num_gts > 1:
        # ties: a prior equal to two ground truths' box and a ground truth repeated; the last claim wins
        priors[:3] = gts[0]
        gts[-1] = gts[0]
    pred = InstanceData(priors=priors)
    gt = InstanceData(bboxes=gts, labels=torch.from_numpy(rng.randint(0, 80, num_gts)))
    ignore = InstanceData(bboxes=_boxes(rng, 2)) if 'ignore_iof_thr' in settings else None
    with DefaultScope.overwrite_default_scope('mmdet'):  # the IoU calculator is built from mmdet's registry
        stock = MaxIoUAssigner(**settings).assign(pred, gt, ignore)  # on the CPU: the reference
        on = [x.to(device) if x is not None else None for x in (pred, gt, ignore)]
        ours = DeviceMaxIoUAssigner(**settings).assign(*on)
        ours.gt_inds, ours.labels, ours.max_overlaps = ours.gt_inds.cpu(), ours.labels.cpu(), ours.max_overlaps.cpu()
    assert torch.equal(ours.gt_inds, stock.gt_inds)
    assert torch.equal(ours.labels, stock.labels)
    # the GPU's IoU kernels may round differently from the CPU's in the last bit
    torch.testing.assert_close(ours.max_overlaps, stock.max_overlaps, rtol=0, atol=0 if device == 'cpu' else 1e-6)
    assert ours.num_gts == stock.num_gts
    if num_gts == 9 and settings['match_low_quality'] and settings['min_pos_iou'] > 0:
        claimed = 3 if settings.get('gt_max_assign_all', True) else 1  # all best priors, or the first only
        assert (stock.gt_inds[:claimed] == num_gts).all()  # the case the ties above set up


def _assign_both(settings, labels_dtype=torch.int64, num_gts=6):
    from mmdet.models.task_modules.assigners import MaxIoUAssigner

    from mavit_mm.models.det import DeviceMaxIoUAssigner
    rng = np.random.RandomState(1)
    pred = InstanceData(priors=_boxes(rng, 300))
    gt = InstanceData(
        bboxes=_boxes(rng, num_gts), labels=torch.from_numpy(rng.randint(0, 80, num_gts)).to(labels_dtype))
    results = []
    with DefaultScope.overwrite_default_scope('mmdet'):
        for cls in (MaxIoUAssigner, DeviceMaxIoUAssigner):
            try:
                results.append(cls(**settings).assign(pred, gt))
            except Exception as e:  # noqa: BLE001  (compared below: the same type as stock)
                results.append(e)
    return results


@pytest.mark.parametrize('neg_iou_thr', [0.3, (0.1, 0.4), [0.1, 0.4], 0, (0.1, 0.2, 0.4)])
@pytest.mark.parametrize('labels_dtype', [torch.int64, torch.uint8, torch.int32])
def test_device_assigner_edge_inputs_behave_as_stock(neg_iou_thr, labels_dtype):
    """Inputs no shipped config uses but the stock assigner takes: ``neg_iou_thr`` as a list or an int (stock:
    no negatives), a 3-tuple (stock: AssertionError), labels of other integer dtypes (stock: int64 labels)."""
    stock, ours = _assign_both(dict(pos_iou_thr=0.5, neg_iou_thr=neg_iou_thr, min_pos_iou=0.3), labels_dtype)
    if isinstance(stock, Exception):
        assert type(ours) is type(stock)
        return
    assert torch.equal(ours.gt_inds, stock.gt_inds)
    assert ours.labels.dtype == stock.labels.dtype == torch.int64
    assert torch.equal(ours.labels, stock.labels)
    assert (stock.labels == -1).any()  # background priors: -1, never 255
    if not isinstance(neg_iou_thr, (float, tuple)):
        assert not (stock.gt_inds == 0).any()  # the stock rule: no negatives at all


def test_apply_fast_train_on_a_segmentor_touches_no_model_part():
    cfg = Config.fromfile(UPERNET)
    model_before = copy.deepcopy(cfg.model)
    changes = apply_fast_train(cfg, cuda=False)
    assert cfg.model == model_before  # SegDataPreprocessor takes no non_blocking; no drop-ins for mmseg
    assert not cfg.train_dataloader.get('pin_memory')  # no CUDA: nothing to pin for
    assert cfg.optim_wrapper.constructor == 'GroupedOptimWrapperConstructor'
    assert changes[0].startswith('optim_wrapper.constructor')


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not CUDA, reason='GPU'))])
def test_device_sampler_draws_a_uniform_subset(device):
    from mmdet.models.task_modules.samplers import RandomSampler

    from mavit_mm.models.det import DeviceRandomSampler
    ours, stock = DeviceRandomSampler(num=16, pos_fraction=0.5), RandomSampler(num=16, pos_fraction=0.5)
    gallery = torch.arange(100, 400, 3, device=device)
    picked = ours.random_choice(gallery, 40)
    assert picked.device == gallery.device and len(set(picked.tolist())) == 40
    assert set(picked.tolist()) <= set(gallery.tolist())
    if device == 'cpu':  # the same draws as the stock sampler from the same seed
        torch.manual_seed(3)
        a = ours.random_choice(gallery, 40)
        torch.manual_seed(3)
        assert torch.equal(a, stock.random_choice(gallery, 40))
    # uniform: over many draws every element is picked about 40/100 of the time
    counts = torch.zeros(len(gallery), device=device)
    for _ in range(500):
        counts[(ours.random_choice(gallery, 40) - 100) // 3] += 1
    assert (counts / 500 - 0.4).abs().max() < 0.12
    with pytest.raises(AssertionError):  # what the stock sampler raises, with a message
        stock.random_choice(gallery, 200)
    with pytest.raises(AssertionError, match='cannot sample 200 elements from a gallery of 100'):
        ours.random_choice(gallery, 200)


@pytest.mark.parametrize('soft', [False, True])
def test_device_mask_targets_equal_mmdet_mask_target(soft):
    from mmdet.structures.mask import BitmapMasks, mask_target

    from mavit_mm.models.det import mask_target_on_device
    rng = np.random.RandomState(0)
    h, w = 61, 77
    gt = [BitmapMasks((rng.rand(5, h, w) > 0.6).astype(np.uint8), h, w) for _ in range(2)]
    proposals, inds = [], []
    for _ in range(2):
        xy = torch.from_numpy(rng.uniform(-10, 80, (13, 2))).float()
        wh = torch.from_numpy(rng.uniform(2, 40, (13, 2))).float()
        proposals.append(torch.cat([xy, xy + wh], 1))  # some boxes leave the image: clipped
        inds.append(torch.from_numpy(rng.randint(0, 5, 13)))
    cfg = ConfigDict(mask_size=28, soft_mask_target=soft)
    # clones: on the CPU mmdet clips the boxes in place (through .numpy()'s shared memory)
    expected = mask_target([p.clone() for p in proposals], inds, gt, cfg)
    got = torch.cat([mask_target_on_device(p, i, m, cfg) for p, i, m in zip(proposals, inds, gt)])
    assert got.shape == (26, 28, 28) and got.dtype == torch.float32
    assert torch.equal(got, expected)
    assert 0.05 < expected.mean() < 0.95  # neither all background nor all foreground
    empty = mask_target_on_device(proposals[0][:0], inds[0][:0], gt[0], cfg)
    assert empty.shape == (0, 28, 28)


def _losses(config: str, fast: bool, steps: int = 2):
    from mavit_mm.analysis.bench.train_iter import synthetic_batch
    from mavit_mm.config.run_config import build_model, load_model_config
    cfg = load_model_config(config)
    cfg.model.backbone.norm_cfg = dict(type='BN')  # SyncBN needs a process group
    # fewer proposals and sampled RoIs than the recipe's 2000 / 512: the same code paths, a quarter of the CPU time
    cfg.model.train_cfg.rpn_proposal.max_per_img = 256
    cfg.model.train_cfg.rcnn.sampler.num = 128
    cfg.optim_wrapper = dict(  # fp32: mmengine's AMP wrapper needs a GPU
        type='OptimWrapper',
        optimizer=cfg.optim_wrapper.optimizer,
        paramwise_cfg=cfg.optim_wrapper.get('paramwise_cfg'),
        clip_grad=cfg.optim_wrapper.get('clip_grad'))
    if fast:
        apply_fast_train(cfg, cuda=False)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        batch = synthetic_batch(cfg.default_scope, 2, (96, 128))
        history = []
        for step in range(steps):
            torch.manual_seed(100 + step)
            history.append({k: v.item() for k, v in model.train_step(batch, wrapper).items()})
    return history, len(wrapper.optimizer.param_groups)


@pytest.mark.parametrize('config', [MASK_RCNN])
def test_fast_train_steps_give_the_plain_losses(config):
    plain, plain_groups = _losses(config, fast=False)
    fast, fast_groups = _losses(config, fast=True)
    assert fast_groups < plain_groups / 50
    assert plain[0].keys() == fast[0].keys() and 'loss_mask' in plain[0]
    for step, (a, b) in enumerate(zip(plain, fast)):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (step, key)
    assert plain[-1]['loss'] != plain[0]['loss']  # the steps train: later losses differ from the first


@pytest.mark.slow
def test_twenty_runner_iterations_on_toy_data_give_the_plain_losses_and_metrics(tmp_path):
    """tools/train.py on the toy Mask R-CNN, 20 iterations (one epoch of 40 images) and a COCO evaluation, with
    and without --fast-train: on the CPU the fast path is the same arithmetic (merged groups run the same
    per-parameter update, the samplers draw the same subsets from the same seed), so every logged loss agrees
    to 1e-5 relative and the evaluated mAPs are equal."""
    import json
    import subprocess
    import sys

    from mavit_mm.toy_data import make_toy_dataset
    root = make_toy_dataset(str(tmp_path / 'toy'), num_train=40, num_val=4, size=96, seed=2)['coco']
    runs = {}
    for fast in (False, True):
        work = tmp_path / ('fast' if fast else 'plain')
        cmd = [
            sys.executable, f'{ROOT}/tools/train.py', f'{ROOT}/configs/toy/mask-rcnn_mavit-t_fpn_toy.py', '--work-dir',
            str(work), '--data-root', root, '--cfg-options', 'model.backbone.init_cfg=None', 'train_cfg.max_epochs=1',
            'train_cfg.val_interval=1', 'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            'model.test_cfg.rcnn.score_thr=0.0'
        ] + ['--fast-train'] * fast
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (scalars, ) = [p for p in work.glob('*/vis_data/scalars.json')]
        lines = [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
        runs[fast] = ([d for d in lines if 'loss' in d], [d for d in lines if 'coco/bbox_mAP' in d])
    (plain, plain_metrics), (fast, fast_metrics) = runs[False], runs[True]
    assert len(plain) == len(fast) == 20
    for a, b in zip(plain, fast):
        losses = [k for k in a if k.startswith('loss')]
        assert losses and losses == [k for k in b if k.startswith('loss')]
        for k in losses:
            assert abs(a[k] - b[k]) <= 1e-5 * max(abs(a[k]), 1e-3), (a['iter'], k, a[k], b[k])
    assert plain_metrics and fast_metrics
    for k in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert plain_metrics[-1][k] == fast_metrics[-1][k]

"""tools/train.py and tools/test.py on the toy data, for each of the five frameworks, as a user runs them."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mavit_mm.analysis.paper import PAPER_ROWS
from mavit_mm.config.run_config import set_data_root, train_in_fp32
from mavit_mm.toy_data import make_toy_dataset
from helpers import ROOT

TOY_DET = osp.join(ROOT, 'configs/toy/mask-rcnn_mavit-t_fpn_toy.py')
TOY_SEG = osp.join(ROOT, 'configs/toy/upernet_mavit-t_toy.py')
DATA_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator')

FRAMEWORKS = {  # real config, toy config to take the data from, head settings for the toy classes
    'retinanet': ('configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py', TOY_DET,
                  dict(bbox_head=dict(num_classes=3)), 'coco/bbox_mAP'),
    'mask_rcnn': ('configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py', TOY_DET, None, 'coco/segm_mAP'),
    'cascade_rcnn': ('configs/cascade_rcnn/cascade-mask-rcnn_mavit-s_fpn_4conv1fc-giou_ms-crop-3x_coco.py',
                     TOY_DET, None, 'coco/segm_mAP'),
    'sem_fpn': ('configs/sem_fpn/fpn_mavit-t_8xb2-80k_ade20k-512x512.py', TOY_SEG,
                dict(decode_head=dict(num_classes=4)), 'mIoU'),
    'upernet': ('configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py', TOY_SEG, None, 'mIoU'),
}


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy'))
    make_toy_dataset(root, num_train=16, num_val=6, size=96, seed=1)
    return root


def run_tool(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, *args],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          env={
                              **os.environ,
                              **(env or {})
                          },
                          timeout=600)


def toy_variant(framework: str, toy_root: str, out_dir: str) -> str:
    """The real config of ``framework`` with the toy data, toy classes, BN and a 2-iteration schedule."""
    real, toy, head, _ = FRAMEWORKS[framework]
    cfg = Config.fromfile(osp.join(ROOT, real))
    toy_cfg = Config.fromfile(toy)
    for key in DATA_KEYS:
        if 'evaluator' in key and 'metric' in cfg[key]:  # what the real config evaluates (bbox, segm)
            toy_cfg[key].metric = cfg[key].metric
        cfg[key] = toy_cfg[key]
    sub = 'coco' if toy == TOY_DET else 'ade'
    set_data_root(cfg, osp.join(toy_root, sub))
    if toy == TOY_SEG:
        cfg.model.data_preprocessor.size = toy_cfg.model.data_preprocessor.size
    if head is None:  # take the toy config's heads wholesale (Mask R-CNN, UperNet) ...
        for key in ('roi_head', 'decode_head', 'auxiliary_head'):
            if key in cfg.model and key in toy_cfg.model and framework != 'cascade_rcnn':
                cfg.model[key] = toy_cfg.model[key]
    else:
        cfg.merge_from_dict(dict(model=head))
    if framework == 'cascade_rcnn':
        for bbox_head in cfg.model.roi_head.bbox_head:
            bbox_head.num_classes = 3
            bbox_head.norm_cfg = dict(type='BN', requires_grad=True)
        cfg.model.roi_head.mask_head.num_classes = 3
    if 'rpn_proposal' in cfg.model.get('train_cfg', {}):  # 3 stages x 2000 / 1000 RoIs: minutes on 2 cores
        cfg.model.train_cfg.rpn_proposal.max_per_img = 64
        cfg.model.test_cfg.rpn.max_per_img = 20
        # the cascade's bbox and mask heads run 4 convs of 256 channels per RoI, per stage: few RoIs
        stages = cfg.model.train_cfg.rcnn
        for stage in (stages if isinstance(stages, list) else [stages]):
            stage.sampler.num = 16
        cfg.model.test_cfg.rcnn.max_per_img = 5
    cfg.model.backbone.update(norm_cfg=dict(type='BN'), init_cfg=None)
    if toy == TOY_DET:  # after 2 iterations all scores are low: keep them, so COCO metrics are computed
        test_cfg = cfg.model.test_cfg
        (test_cfg.rcnn if 'rcnn' in test_cfg else test_cfg).score_thr = 0.0
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
    cfg.param_scheduler = None
    train_in_fp32(cfg)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    path = osp.join(out_dir, osp.basename(real))  # the real config's name: collect_results.py matches it
    cfg.dump(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_train_and_test_each_framework_on_toy_data(framework, toy_root, tmp_path):
    config = toy_variant(framework, toy_root, str(tmp_path))
    work_dir = tmp_path / 'work'
    # --fast-train here (the launch tests run the plain path): the flag's drop-ins in a real Runner
    out = run_tool('tools/train.py', config, '--work-dir', str(work_dir), '--fast-train', '--log-input-shapes')
    assert out.returncode == 0, out.stderr[-3000:]
    log = (out.stdout + out.stderr)
    assert '--fast-train: optim_wrapper.constructor = GroupedOptimWrapperConstructor' in log
    if framework in ('mask_rcnn', 'cascade_rcnn'):  # configs with a paramwise_cfg (no decay on norms)
        assert 'param groups merged into' in log
        assert '-> DeviceMaxIoUAssigner / DeviceRandomSampler / DeviceFCNMaskHead' in log
    scalars = [json.loads(line) for line in next(work_dir.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    losses = [s['loss'] for s in scalars if 'loss' in s]
    assert len(losses) == 2 and all(v == v and abs(v) < 1e4 for v in losses)  # finite
    shapes = [(s['input_h'], s['input_w']) for s in scalars if 'loss' in s]  # the backbone's input, per iteration
    assert len(shapes) == 2 and all(h >= 32 and w >= 32 and h == int(h) and w == int(w) for h, w in shapes)
    metric = FRAMEWORKS[framework][3]
    assert any(metric in s for s in scalars), f'no {metric} in {scalars[-1]}'

    ckpt = work_dir / 'iter_2.pth'
    result = tmp_path / 'preds.pkl'
    out = run_tool('tools/test.py', config, str(ckpt), '--work-dir', str(tmp_path / 'test'), '--out', str(result),
                   '--show-dir', str(tmp_path / 'vis'))
    assert out.returncode == 0, out.stderr[-3000:]
    assert result.stat().st_size > 0
    drawn = [f for f in tmp_path.rglob('*.*g') if 'vis' in str(f)]
    assert drawn, 'no predictions drawn'

    # collect_results.py: our test metric beside the paper's, from what mmengine wrote
    logged = json.loads(next((tmp_path / 'test').glob('*/*.json')).read_text().splitlines()[-1])
    out = run_tool('tools/analysis_tools/collect_results.py', str(tmp_path / 'test'), '--out', str(tmp_path / 'r.json'))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / 'r.json').read_text())
    name = osp.splitext(osp.basename(FRAMEWORKS[framework][0]))[0]
    factor = 100 if metric.startswith('coco') else 1
    paper = PAPER_ROWS[name].metrics
    row = next(r for r in rows if r['metric'] in ('mask AP', 'box AP', 'mIoU') and r['metric'] in paper)
    assert row['config'] == name and row['source'] == 'test'
    key = {'box AP': 'coco/bbox_mAP', 'mask AP': 'coco/segm_mAP', 'mIoU': 'mIoU'}[row['metric']]
    assert row['ours'] == round(logged[key] * factor, 2) and row['paper'] == paper[row['metric']]
    assert row['diff'] == round(row['ours'] - row['paper'], 2)
    assert f'| {name} | {row["metric"]} |' in out.stdout


@pytest.mark.slow
def test_train_profile_reports_each_part_of_a_detector(toy_root, tmp_path):
    """tools/train.py --profile on Mask R-CNN: mmengine's ProfilerHook plus the per-part summary."""
    config = toy_variant('mask_rcnn', toy_root, str(tmp_path))
    work_dir = tmp_path / 'work'
    out = run_tool('tools/train.py', config, '--work-dir', str(work_dir), '--profile', '2', '--profile-start', '2',
                   '--cfg-options', 'train_cfg.max_iters=4', 'default_hooks.checkpoint.interval=4')
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'Self CPU time total' in log  # torch's op table, from the ProfilerHook
    assert 'where the profiled iterations went' in log
    summary = json.loads((work_dir / 'profile_phases.json').read_text())
    assert summary['iterations'] == 2
    parts = summary['phases']
    assert set(parts) == {
        'data_preprocessor', 'backbone', 'neck', 'rpn_head', 'roi_head', 'backward', 'optimizer', 'other'
    }
    for name in ('backbone', 'rpn_head', 'roi_head', 'backward'):
        assert 0 < parts[name]['ms'] < summary['wall_ms'], name
    assert (work_dir / 'profile_trace.json').stat().st_size > 0


@pytest.mark.slow
def test_classification_train_and_top1_eval_on_toy_data(toy_root, tmp_path):
    config = 'configs/toy/mavit-t_toy-cls.py'
    work_dir = tmp_path / 'work'
    options = [
        '--cfg-options', 'train_dataloader.batch_size=8', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1'
    ]
    out = run_tool('tools/train.py', config, '--work-dir', str(work_dir), '--data-root', osp.join(toy_root, 'cls'),
                   *options)
    assert out.returncode == 0, out.stderr[-3000:]
    scalars = [json.loads(line) for line in next(work_dir.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    assert len([s for s in scalars if 'loss' in s]) == 2
    assert any('accuracy/top1' in s for s in scalars)
    # the ImageNet recipe's EMA and repeated-augmentation sampler ran (inherited by the toy config)
    import torch
    ckpt = torch.load(work_dir / 'epoch_1.pth', map_location='cpu')
    assert 'ema_state_dict' in ckpt and ckpt['ema_state_dict']
    assert 'RepeatAugSampler' in next(work_dir.glob('*/*.log')).read_text()
    out = run_tool('tools/test.py', config, str(work_dir / 'epoch_1.pth'), '--work-dir', str(tmp_path / 't'),
                   '--data-root', osp.join(toy_root, 'cls'), '--out', str(tmp_path / 'preds.pkl'))
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'accuracy/top1' in out.stdout + out.stderr and (tmp_path / 'preds.pkl').stat().st_size > 0


def test_missing_coco_names_layout():
    out = run_tool('tools/train.py', 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py', '--data-root',
                   '/nonexistent/coco')
    assert out.returncode != 0
    assert 'The train dataset (CocoDataset) is not where the config says' in out.stderr
    assert 'annotations/instances_train2017.json' in out.stderr and '--data-root' in out.stderr


def test_missing_ade_names_layout():
    out = run_tool('tools/train.py', 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py', '--data-root',
                   '/nonexistent/ade')
    assert out.returncode != 0
    assert 'ADE20KDataset' in out.stderr and 'images/training' in out.stderr


def test_set_data_root_moves_datasets_and_evaluators():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'))
    set_data_root(cfg, '/datasets/coco')
    assert cfg.train_dataloader.dataset.data_root == '/datasets/coco/'
    assert cfg.test_dataloader.dataset.data_root == '/datasets/coco/'
    assert cfg.val_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'


def test_launch_scripts_are_valid_bash():
    for script in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh', 'install.sh'):
        assert subprocess.run(['bash', '-n', osp.join(ROOT, 'tools', script)]).returncode == 0

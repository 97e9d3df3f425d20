"""The real-run benchmark's parts that run on a CPU: the generated COCO / ADE20K-shaped data (read back with
pycocotools and mmdet / mmseg's own datasets), the short-run options and the statistics of a run's log."""
import datetime
import json
import os
import os.path as osp
from collections import Counter

import cv2
import numpy as np
import pytest
from mmengine.registry import DefaultScope

from mavit_mm.analysis.bench import switch_args
from mavit_mm.analysis.bench.real_run import (brief, busy_share, format_sighting, log_stem, parse_utilisation,
                                              per_image_times, startup_parts, steady_stats, train_options)
from mavit_mm.bench_data import COCO_COMMON_SIZES, make_bench_data
from mavit_mm.engine.input_shapes import split_by_sighting
from helpers import ROOT


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    return make_bench_data(str(tmp_path_factory.mktemp('bench')), coco_train=40, coco_val=6, ade_train=6, ade_val=6)


def test_coco_shaped_data_has_real_sizes_and_valid_instances(bench):
    from pycocotools.coco import COCO
    coco = COCO(osp.join(bench['coco'], 'annotations', 'instances_train2017.json'))
    images = coco.dataset['images']
    sizes = Counter((im['width'], im['height']) for im in images)
    assert len(sizes) >= 8  # many sizes, as COCO has
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)  # both orientations
    assert all(max(w, h) <= 640 for w, h in sizes) and sum(sizes[s] for s in COCO_COMMON_SIZES) > 0
    for im in images:
        img = cv2.imread(osp.join(bench['coco'], 'train2017', im['file_name']))
        assert img.shape[:2] == (im['height'], im['width'])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im['id']))
        assert 1 <= len(anns) <= 15
        for ann in anns:
            mask = coco.annToMask(ann)
            assert mask.sum() > 0 and abs(mask.sum() - ann['area']) < 0.5 * ann['area'] + 20
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= im['width'] and y + h <= im['height']
    assert len(coco.dataset['categories']) == 80


def test_stock_datasets_read_the_generated_data(bench):
    """mmdet's CocoDataset with the stock config's 80 classes and filter, and mmseg's ADE20KDataset."""
    import mmdet.datasets  # noqa: F401  (registers)
    import mmseg.datasets  # noqa: F401
    from mmdet.registry import DATASETS as DET
    from mmseg.registry import DATASETS as SEG
    with DefaultScope.overwrite_default_scope('mmdet'):
        coco = DET.build(
            dict(
                type='CocoDataset',
                data_root=bench['coco'] + '/',
                ann_file='annotations/instances_train2017.json',
                data_prefix=dict(img='train2017/'),
                filter_cfg=dict(filter_empty_gt=True, min_size=32),
                pipeline=[]))
    assert len(coco) == 40
    with DefaultScope.overwrite_default_scope('mmseg'):
        ade = SEG.build(
            dict(
                type='ADE20KDataset',
                data_root=bench['ade'],
                data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                pipeline=[]))
    assert len(ade) == 6
    labels = cv2.imread(ade[0]['seg_map_path'], cv2.IMREAD_UNCHANGED)
    image = cv2.imread(ade[0]['img_path'])
    assert labels.shape == image.shape[:2] and labels.max() <= 150 and min(labels.shape) >= 256


def test_data_is_written_once(bench):
    marker = [p for p in os.listdir(osp.dirname(bench['coco'])) if p.startswith('.complete')]
    assert len(marker) == 1
    again = make_bench_data(osp.dirname(bench['coco']), coco_train=40, coco_val=6, ade_train=6, ade_val=6)
    assert again == bench


def test_train_options_shorten_the_config_s_own_loop():
    epoch_based = train_options(osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'), 50)
    assert 'train_cfg.max_epochs=1' in epoch_based and 'train_dataloader.dataset.indices=100' in epoch_based
    iter_based = train_options(osp.join(ROOT, 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py'), 50)
    assert 'train_cfg.max_iters=50' in iter_based and 'default_hooks.checkpoint.interval=50' in iter_based
    for opts in (epoch_based, iter_based):
        assert 'model.backbone.init_cfg=None' in opts and 'log_processor.window_size=1' in opts
        assert 'model.pretrained=None' not in opts


def test_train_options_drop_mmseg_s_model_level_pretrained():
    # mmseg's ResNet baselines name their ImageNet weights in model.pretrained, which the backbone turns
    # into its init_cfg: a download on a machine without network
    opts = train_options('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', 50)
    assert 'model.pretrained=None' in opts and 'model.backbone.init_cfg=None' in opts


def test_switch_entries_become_train_py_flags():
    assert switch_args('none') == []
    assert switch_args('fast-train') == ['--fast-train']
    assert switch_args('fast-train,cuda-graphs=train') == ['--fast-train', '--cuda-graphs', 'train']


def test_steady_stats_separate_the_cold_start():
    times = [3.0, 2.0, 1.0] + [0.1] * 8 + [0.3, 0.2]
    stats = steady_stats(times, [0.01] * len(times), warmup=3)
    assert stats['iters'] == 10
    assert stats['median_ms'] == pytest.approx(100.0)
    assert stats['p90_ms'] == pytest.approx(200.0)
    assert stats['cold_s'] == pytest.approx(6.0 - 0.3)
    with pytest.raises(ValueError, match='raise --iters'):
        steady_stats(times[:3], [0.0] * 3, warmup=3)


def test_a_later_run_of_the_same_config_keeps_the_earlier_run_s_log(tmp_path):
    config = 'configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py'
    first = log_stem(str(tmp_path), config, 'fast-train,cuda-graphs=train')
    assert first == str(tmp_path / 'retinanet_mavit-t_fpn_1x_coco_fast-train+cuda-graphs-train')
    assert log_stem(str(tmp_path), config, 'fast-train,cuda-graphs=train') == first  # nothing written yet
    (tmp_path / (osp.basename(first) + '_train.log')).write_text('the first run')
    second = log_stem(str(tmp_path), config, 'fast-train,cuda-graphs=train')
    assert second == first + '-2'
    (tmp_path / (osp.basename(second) + '_gpu.csv')).write_text('')
    assert log_stem(str(tmp_path), config, 'fast-train,cuda-graphs=train') == first + '-3'
    assert log_stem(str(tmp_path), config, 'none') == str(tmp_path / 'retinanet_mavit-t_fpn_1x_coco_none')
    row = dict(config=config, median_ms=80.1, iteration_times_s=[0.1, 0.08], by_sighting=dict(shapes=dict(n=2)))
    assert brief(row) == dict(config=config, median_ms=80.1, by_sighting=dict(shapes=dict(n=2)))


def test_steady_iterations_split_by_how_often_their_shape_came_before():
    a, b, c = (800, 1216), (1088, 800), (768, 1344)
    shapes = [a, b, a, a, c, b, a]
    steps = [dict(time=float(t), input_h=h, input_w=w) for t, (h, w) in enumerate(shapes, 1)]
    # after 2 warm-up steps: a (2nd, 3 s), a (3rd, 4 s), c (1st, 5 s), b (2nd, 6 s), a (4th, 7 s)
    split = split_by_sighting(steps, warmup=2)
    assert split['first'] == dict(n=1, median_ms=5000.0, p90_ms=5000.0)
    assert split['second'] == dict(n=2, median_ms=4500.0, p90_ms=6000.0)
    assert split['later'] == dict(n=2, median_ms=5500.0, p90_ms=7000.0)
    assert split['shapes'] == dict(n=3)
    assert format_sighting(split) == (
        'steady iterations, 3 input shapes in the run: 1 at a new input shape: median 5000.0 ms, p90 5000.0 ms; '
        '2 at a shape seen once: median 4500.0 ms, p90 6000.0 ms; '
        '2 at a shape seen more often: median 5500.0 ms, p90 7000.0 ms')
    assert split_by_sighting([dict(time=1.0)], warmup=0) is None


@pytest.mark.parametrize('loop', ['Epoch', 'Iter'])  # mmdet's epoch-based configs, mmseg's iteration-based ones
def test_per_image_times_read_every_logged_test_iteration(loop):
    log = '\n'.join(
        f'12/04 10:00:00 - mmengine - INFO - {loop}(test) [{i:>3}/40]    eta: 0:00:01  time: {0.05 * i:.4f}  '
        f'data_time: 0.0020  memory: 300' for i in range(1, 5))
    # the closing metrics line, with the run's mean time
    log += f'\n12/04 10:00:01 - mmengine - INFO - {loop}(test) [40/40]    mIoU: 0.0500  data_time: 0.0171  time: 3.1284'
    assert per_image_times(log) == pytest.approx([0.05, 0.10, 0.15, 0.20])
    assert np.isclose(sum(per_image_times(log)), 0.5)
    assert json.dumps(per_image_times('')) == '[]'


def _train_log(loop: str, seconds: list) -> str:
    """An mmengine run log (the work dir's file: dated lines) with iteration i logged ``seconds[i-1]`` s
    after 10:00:00."""
    n = len(seconds)
    lines = ['2026/12/04 09:59:50 - mmengine - INFO - Checkpoints will be saved to /tmp/w.']
    for i, s in enumerate(seconds, 1):
        where = f'Iter(train) [{i:>3}/{n}]' if loop == 'iter' else f'Epoch(train)  [1][{i:>3}/{n}]'
        lines.append(f'2026/12/04 10:00:{s:02d} - mmengine - INFO - {where}  lr: 1.0000e-04  time: 0.5000')
    return '\n'.join(lines)


@pytest.mark.parametrize('loop', ['iter', 'epoch'])
def test_busy_share_averages_the_samples_of_the_steady_iterations(loop):
    # nvidia-smi every 0.5 s: idle before 10:00:10 (start-up, warm-up) and after 10:00:30 (checkpoint),
    # 80 % / 60 % in turn between
    csv = ['timestamp, utilization.gpu [%]']
    for k in range(80):
        t = 5 + 0.5 * k
        busy = 10 <= t <= 30
        csv.append(f'2026/12/04 10:00:{int(t):02d}.{500 if t % 1 else 0:03d}, {(80 if k % 2 else 60) if busy else 0}')
    csv.append('2026/12/04 10:00:45.000, [N/A]')
    samples = parse_utilisation('\n'.join(csv) + '\n2026/12/04 10:0')  # a cut last line
    assert len(samples) == 80
    log = _train_log(loop, [2 * i for i in range(1, 16)])  # iteration i ends at 10:00:2i
    assert busy_share(samples, log, warmup=5) == pytest.approx(0.7, abs=0.02)  # 10:00:10 to 10:00:30
    assert busy_share(samples, log, warmup=1) < 0.7  # a window that takes in the idle warm-up reads lower
    assert busy_share(samples, log, warmup=14) is None  # 2 s: too short to say
    assert busy_share(samples, log, warmup=20) is None  # no such iteration
    # ending at iteration 5 (10:00:10): the idle samples from 10:00:05 only, not the busy ones after
    assert busy_share(samples, log, warmup=1, last=5) < 0.1 < busy_share(samples, log, warmup=1)
    assert busy_share([], log, warmup=5) is None  # no nvidia-smi


@pytest.mark.parametrize('loop', ['iter', 'epoch'])
def test_startup_parts_split_the_time_outside_the_iterations(loop):
    log = _train_log(loop, [2 * i for i in range(1, 16)])  # first line 09:59:50; iterations end 10:00:02 to :30
    launch = datetime.datetime(2026, 12, 4, 9, 59, 30)
    end = datetime.datetime(2026, 12, 4, 10, 0, 41)
    parts = startup_parts(log, launch, end, first_iter_s=1.5)
    # 20 s to the log's first line; 12 s from it to the end of iteration 1, which took 1.5 s; 11 s after the last
    assert parts == dict(to_log_s=20.0, to_first_iter_s=10.5, after_last_iter_s=11.0)
    assert startup_parts(log.split('\n')[0], launch, end, 1.5) is None  # stopped before its first iteration
    assert startup_parts('', launch, end, 1.5) is None

"""tools/analysis_tools/batch_shapes.py: the padded shapes of a config's training batches, checked against the
sizes the pipeline gave the same batches' images."""
import json
import math

import pytest
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mavit_mm.analysis.batch_shapes import batch_shapes, bucketed, summarize
from mavit_mm.bench_data import make_bench_data
from mavit_mm.config.run_config import load_config, set_data_root
from helpers import call_tool

CONFIG = 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return make_bench_data(
        str(tmp_path_factory.mktemp('bench')), coco_train=12, coco_val=1, ade_train=1, ade_val=1)['coco']


def test_summary_counts_sightings_graphs_and_pixels():
    a, b, c = (800, 1216), (1088, 800), (768, 1344)
    shapes = [a, b, a, a, c, b, a, c]
    # a, b, c first; a, b, c second (the graphs, max 2: a and b); a at its 3rd and 4th: replayed; c's 2nd: none
    out = summarize(shapes, max_graphs=2)
    assert out == dict(iters=8, shapes=3, first_sightings=3, second_sightings=3, replayed_share=2 / 8)
    # capture_after=0: a and b captured at their first sighting (c finds no room); their 4 later ones replayed
    assert summarize(shapes, max_graphs=2, capture_after=0)['replayed_share'] == 4 / 8
    assert summarize(shapes, max_graphs=3, capture_after=0)['replayed_share'] == 5 / 8
    assert bucketed([a, c], 160) == [(800, 1280), (800, 1440)]
    ref = [(800, 1000), (1000, 800)]
    assert summarize([(800, 1120), (1120, 800)], ref)['extra_pixels'] == 1120 * 800 * 2 / (800 * 1000 * 2) - 1


def test_shapes_are_the_batch_s_largest_resized_image_padded_to_32(coco_root):
    cfg = load_config(CONFIG)
    set_data_root(cfg, coco_root)
    shapes = batch_shapes(cfg, iters=8, seed=3)  # 12 images: a second epoch, in another order
    assert len(shapes) == 8 and len(set(shapes)) > 1
    # the same batches, their images' sizes after the pipeline's keep-ratio resize, padded to 32 here
    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False, pin_memory=False)
    expected = []
    with DefaultScope.overwrite_default_scope('mmdet'):
        loader = Runner.build_dataloader(loader_cfg, seed=3)
        for epoch in range(2):
            loader.batch_sampler.sampler.set_epoch(epoch)
            for batch in loader:
                sizes = [s.img_shape for s in batch['data_samples']]
                expected.append(tuple(math.ceil(max(x[i] for x in sizes) / 32) * 32 for i in (0, 1)))
    assert shapes == expected[:8]
    assert all(max(h, w) <= 1344 for h, w in shapes)
    # a config's batch augments count: opting in to BatchShapeBucketPad gives the bucketed shapes
    cfg.model.data_preprocessor.batch_augments = [dict(type='BatchShapeBucketPad', size_divisor=160, pad_mask=True)]
    assert batch_shapes(cfg, iters=8, seed=3) == bucketed(shapes, 160)


def test_batch_shapes_cli(coco_root, tmp_path, capsys):
    out = tmp_path / 'shapes.json'
    assert call_tool('tools/analysis_tools/batch_shapes.py', CONFIG, '--data-root', coco_root, '--iters', '6',
                     '--size-divisors', '160', '--out', str(out)) == 0
    result = json.loads(out.read_text())
    assert len(result['shapes']) == 6
    assert [r['pad'] for r in result['rows']] == ["the config's preprocessor", 'on to 160 (BatchShapeBucketPad)']
    base, coarse = result['rows']
    assert coarse['shapes'] <= base['shapes'] and coarse['extra_pixels'] >= 0 == base['extra_pixels']
    assert all(math.ceil(h / 32) * 32 == h for h, w in result['shapes'])
    assert '| on to 160 (BatchShapeBucketPad) |' in capsys.readouterr().out

"""Params / FLOPs as the paper counts them, the full count, the metafiles and the model zoo page,
collect_results.py and benchmark.py."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from mmengine.config import Config
from torch import nn

from mavit_mm.analysis.complexity import PAPER_SHAPES, full_flops, model_complexity
from mavit_mm.analysis.paper import PAPER_ROWS
from mavit_mm.models.layers.mala import mala_attention
from mavit_mm.utils.config_tools import build_model

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
T_CONFIGS = [n for n in PAPER_ROWS if 'mavit-t_' in n]


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def metafile_models():
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    return {m['Name']: m for path in index['Import'] for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']}


@pytest.mark.parametrize('name', T_CONFIGS)
def test_t_variants_params_and_flops_as_the_paper(name):
    """Measured now: within the issue's tolerances of the paper, and what the metafile and zoo page say."""
    row = PAPER_ROWS[name]
    cfg = Config.fromfile(osp.join(ROOT, 'configs', row.folder, name + '.py'))
    cfg.model.backbone.init_cfg = None
    fig = model_complexity(build_model(cfg), cfg.default_scope, PAPER_SHAPES[cfg.default_scope], full=False)
    params_m, gflops = fig['params'] / 1e6, fig['flops_paper'] / 1e9
    assert abs(params_m - row.params) <= 0.5, params_m
    assert abs(gflops / row.flops - 1) <= 0.03, gflops
    meta = metafile_models()[name]['Metadata']
    assert meta['Parameters'] == fig['params']
    assert abs(meta['FLOPs'] / fig['flops_paper'] - 1) < 1e-3  # random proposals/inputs: same count


def test_every_metafile_entry_within_tolerance_of_the_paper():
    models = metafile_models()
    assert set(models) == set(PAPER_ROWS)
    for name, model in models.items():
        row = PAPER_ROWS[name]
        assert abs(model['Metadata']['Parameters'] / 1e6 - row.params) <= 0.5, name
        assert abs(model['Metadata']['FLOPs'] / 1e9 / row.flops - 1) <= 0.03, name
        assert model['Metadata']['FLOPs (full count)'] > model['Metadata']['FLOPs'] * 0.5, name
        assert osp.isfile(osp.join(ROOT, model['Config'])), name
        assert model['Results Source'].startswith('paper')
        for result in model['Results']:
            for metric, value in result['Metrics'].items():
                assert row.metrics[metric] == value


def test_model_index_validates():
    from modelindex import load
    errors = load(osp.join(ROOT, 'model-index.yml')).check(silent=True)
    assert errors == []


def test_model_zoo_page_is_generated_from_the_metafiles():
    out = run('tools/misc/gen_model_zoo.py', '--reuse', '--check')
    assert out.returncode == 0, out.stdout + out.stderr


class _SDPA(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


class _MALA(nn.Module):
    def forward(self, x):
        return mala_attention(x, x, x, None, None, x.shape[-1] ** -0.5)


def test_full_count_includes_attention_products():
    b, h, n, d = 2, 3, 50, 16
    x = torch.randn(b, h, n, d)
    assert full_flops(_SDPA(), x) == 2 * b * h * n * n * d          # q k^T and attn v
    # MALA: q . mean(k) (N d), k^T v (N d^2), q (k^T v) (N d^2): linear in N
    assert full_flops(_MALA(), x) == b * h * (n * d + 2 * n * d * d)


def test_get_flops_cli_writes_both_counts(tmp_path):
    out_json = tmp_path / 'flops.json'
    out = run('tools/analysis/get_flops.py', 'configs/imagenet/mavit-t_8xb128_in1k.py', '--out', str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert result['shape'] == [224, 224] and result['paper_flops_g'] == 2.5
    assert abs(result['flops_paper'] / 1e9 / 2.5 - 1) <= 0.03
    assert result['flops_full'] > 0 and 'paper convention' in out.stdout and 'full count' in out.stdout


def test_benchmark_runs_on_cpu(tmp_path):
    out_json = tmp_path / 'bench.json'
    out = run('tools/analysis/benchmark.py', 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py',
              '--shape', '64', '96', '--batch-size', '2', '--warmup', '1', '--repeats', '3',
              '--device', 'cpu', '--out', str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert result['shape'] == [64, 96] and result['batch_size'] == 2 and result['repeats'] == 3
    assert result['min_ms'] <= result['median_ms'] <= result['max_ms']
    assert result['env']['torch'] == torch.__version__ and 'median' in out.stdout


def test_train_iteration_benchmark_runs_on_cpu(tmp_path):
    out_json = tmp_path / 'iter.json'
    out = run('tools/analysis/benchmark_train_iter.py', 'configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py',
              'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '--device', 'cpu', '--shape', '96', '128',
              '--batch-size', '1', '--warmup', '1', '--repeats', '2', '--out', str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out_json.read_text())['rows']
    assert [r['config'] for r in rows] == ['retinanet_mavit-t_fpn_1x_coco', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco']
    assert all(r['median_ms'] > 0 and r['repeats'] == 2 for r in rows)


def test_backbone_benchmark_runs_on_cpu(tmp_path):
    """Each mode and a peer on the same inputs; ratios against the same arch's reference; with_cp
    (here the combined ('ffn', 'stem')) only in training steps; the sweep has all three attention kinds."""
    out_json = tmp_path / 'bench.json'
    out = run('tools/analysis/benchmark_backbone.py', '--device', 'cpu', '--archs', 't', '--peers', 'ResNet-50',
              '--modes', 'kernels', 'graphs', '--with-cp', 'ffn+stem', '--settings', 'cls', 'train', '--batch-scale', '0.02',
              '--size-scale', '0.1', '--warmup', '1', '--repeats', '1', '--sweep', str(tmp_path / 'sweep.png'),
              '--sweep-sizes', '64', '--out', str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    labels = [(r['setting'], r['model']) for r in result['rows']]
    assert labels == [('cls', 'MAViT-T (reference)'), ('cls', 'MAViT-T (kernels)'), ('cls', 'MAViT-T (graphs)'),
                      ('cls', 'ResNet-50'), ('train', 'MAViT-T (reference)'), ('train', 'MAViT-T (kernels)'),
                      ('train', 'MAViT-T (kernels, with_cp=ffn+stem)'), ('train', 'MAViT-T (graphs)'),
                      ('train', 'MAViT-T (graphs, with_cp=ffn+stem)'), ('train', 'ResNet-50')]
    for r in result['rows']:
        ref = next(x for x in result['rows'] if x['setting'] == r['setting'] and x['model'].endswith('(reference)'))
        assert abs(r['speedup_vs_reference'] - ref['median_ms'] / r['median_ms']) < 1e-9
        if r is ref:
            assert r['speedup_vs_reference'] == 1 and r.get('memory_vs_reference', 1) == 1
    assert {r['attention'] for r in result['sweep']} == {'MALA (reference)', 'MALA (Triton)', 'softmax (SDPA)'}
    assert (tmp_path / 'sweep.png').stat().st_size > 0 and result['env']['torch'] == torch.__version__


def test_count_negative_scores_covers_every_mala_score(tmp_path):
    """The tool sees every N x N score of every MALA block for every image and checkpoint (MAViT-T at
    64x64: stages 1-2, two blocks each, 16^2 tokens x 1 head and 8^2 tokens x 2 heads)."""
    import mmcv
    import numpy as np
    cfg = Config.fromfile(osp.join(ROOT, 'configs/toy/mavit-t_toy-cls.py'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': build_model(cfg).state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    for i in range(2):
        mmcv.imwrite(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), str(tmp_path / 'img' / f'{i}.png'))
    out_json = tmp_path / 'neg.json'
    out = run('tools/analysis/count_negative_scores.py', 'configs/toy/mavit-t_toy-cls.py', str(ckpt),
              '--images', str(tmp_path / 'img'), '--size', '64', '--out', str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    (row, ) = json.loads(out_json.read_text())
    assert row['checkpoint'] == 'epoch_1.pth'
    assert row['total'] == 2 * (2 * 256 ** 2 * 1 + 2 * 64 ** 2 * 2)
    assert 0 <= row['negative'] <= row['total'] and (row['negative'] > 0) == (row['min'] < 0)
    assert row['share'] == row['negative'] / row['total'] and 'epoch_1.pth' in out.stdout


def test_build_model_takes_the_top_level_data_preprocessor():
    """mmpretrain configs put mean / std / to_rgb at the top level; the Runner moves them into the model,
    and so must the analysis tools' build_model, or they feed unnormalised images."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/toy/mavit-t_toy-cls.py'))
    cfg.model.backbone.init_cfg = None
    preprocessor = build_model(cfg).data_preprocessor
    assert preprocessor._enable_normalize and preprocessor.to_rgb
    assert preprocessor.mean.flatten().tolist() == pytest.approx(cfg.data_preprocessor.mean)

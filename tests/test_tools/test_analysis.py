"""Params / FLOPs as the paper counts them, the full count, the metafiles and the model zoo page,
collect_results.py and benchmark.py."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from mmengine.config import Config
from torch import nn

from mavit_mm.analysis.complexity import PAPER_SHAPES, full_flops, model_complexity
from mavit_mm.analysis.paper import PAPER_ROWS
from mavit_mm.config.run_config import build_model
from mavit_mm.ops.mala.naive import mala_attention
from helpers import ROOT, call_tool, run_tool

T_CONFIGS = [n for n in PAPER_ROWS if 'mavit-t_' in n]


def metafile_models():
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    return {m['Name']: m for path in index['Import'] for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']}


@pytest.mark.parametrize('name', T_CONFIGS)
def test_t_variants_params_and_flops_as_the_paper(name):
    """Measured now: within 0.5 M parameters and 3 % FLOPs of the paper, and what the metafile and zoo page say."""
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
    out = run_tool('tools/misc/gen_model_zoo.py', '--reuse', '--check')
    assert out.returncode == 0, out.stdout + out.stderr


class _SDPA(nn.Module):

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


class _MALA(nn.Module):

    def forward(self, x):
        return mala_attention(x, x, x, None, None, x.shape[-1]**-0.5)


def test_full_count_includes_attention_products():
    b, h, n, d = 2, 3, 50, 16
    x = torch.randn(b, h, n, d)
    assert full_flops(_SDPA(), x) == 2 * b * h * n * n * d  # q k^T and attn v
    # MALA: q . mean(k) (N d), k^T v (N d^2), q (k^T v) (N d^2): linear in N
    assert full_flops(_MALA(), x) == b * h * (n * d + 2 * n * d * d)


def test_get_flops_cli_writes_both_counts(tmp_path):
    out_json = tmp_path / 'flops.json'
    out = run_tool('tools/analysis_tools/get_flops.py', 'configs/imagenet/mavit-t_8xb128_in1k.py', '--out',
                   str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert result['shape'] == [224, 224] and result['paper_flops_g'] == 2.5
    assert abs(result['flops_paper'] / 1e9 / 2.5 - 1) <= 0.03
    assert result['flops_full'] > 0 and 'paper convention' in out.stdout and 'full count' in out.stdout


BENCHMARK = 'tools/analysis_tools/benchmark.py'


def test_benchmark_model_runs_on_cpu(tmp_path, capsys):
    out_json = tmp_path / 'bench.json'
    assert call_tool(BENCHMARK, 'model', 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py', '--shape', '64',
                     '96', '--batch-size', '2', '--warmup', '1', '--repeats', '3', '--device', 'cpu', '--out',
                     str(out_json)) == 0
    result = json.loads(out_json.read_text())
    assert result['shape'] == [64, 96] and result['batch_size'] == 2 and result['repeats'] == 3
    assert result['min_ms'] <= result['median_ms'] <= result['max_ms'] and result['precision'] == 'fp32'
    assert result['env']['torch'] == torch.__version__ and 'median' in capsys.readouterr().out


def test_benchmark_train_iter_runs_on_cpu(tmp_path):
    """A detector of ours beside a stock one, and a segmentor (its synthetic label maps)."""
    out_json = tmp_path / 'iter.json'
    assert call_tool(BENCHMARK, 'train-iter', 'configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py',
                     'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
                     'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py', '--device', 'cpu',
                     '--shape', '64', '64', '--batch-size', '2', '--warmup', '0', '--repeats', '1', '--out',
                     str(out_json)) == 0  # batch 2: UperNet's pooling BN needs more than one value
    rows = json.loads(out_json.read_text())['rows']
    assert [r['config'] for r in rows] == [
        'retinanet_mavit-t_fpn_1x_coco', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco',
        'upernet_mavit-t_8xb2-160k_ade20k-512x512'
    ]
    assert all(r['median_ms'] > 0 and r['repeats'] == 1 for r in rows)


def test_benchmark_train_iter_times_a_segmentor_at_the_asked_shape():
    """mmseg's data preprocessor pads every batch to its crop size (512 x 512): train-iter sets it to --shape, so
    the batch the model trains on is the one asked for."""
    from mmengine.registry import DefaultScope

    from mavit_mm.analysis.bench.train_iter import _prepare, synthetic_batch
    cfg, model, _ = _prepare(
        osp.join(ROOT, 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py'), 'fp32', torch.device('cpu'),
        (64, 96))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        data = model.data_preprocessor(synthetic_batch(cfg.default_scope, 2, (64, 96)), True)
    assert tuple(data['inputs'].shape) == (2, 3, 64, 96)


def test_benchmark_train_iter_rows_per_config():
    from mavit_mm.analysis.bench.train_iter import row_variants
    assert row_variants(['none']) == [(False, False)]
    assert row_variants(['none', 'fast-train']) == [(False, False), (True, False)]
    assert row_variants(['none', 'fast-train', 'fast-train,cuda-graphs=train']) == [(False, False), (True, False),
                                                                                    (True, True)]
    assert row_variants(['cuda-graphs=all']) == [(False, True)]
    with pytest.raises(ValueError, match='use cuda-graphs=train'):
        row_variants(['cuda-graphs=eval'])


def test_switch_entries_are_train_py_switches():
    """One spelling for every benchmark that runs or mimics tools/train.py: its switches, checked (and a bad
    entry is a usage error of the tool)."""
    from mavit_mm.analysis.bench import UsageError, parse_switch, switch_args
    assert parse_switch('none') == {}
    assert parse_switch('fast-train,cuda-graphs=train') == {'fast-train': None, 'cuda-graphs': 'train'}
    assert switch_args('fast-train,cuda-graphs=train') == ['--fast-train', '--cuda-graphs', 'train']
    for bad, message in [('fast', "unknown switch 'fast'"), ('cuda-graphs', 'takes =eval|train|all'),
                         ('cuda-graphs=yes', 'takes =eval|train|all'), ('fast-train=on', 'takes no value')]:
        with pytest.raises(UsageError, match=message):
            parse_switch(bad)
    assert call_tool(BENCHMARK, 'runner', '--switches', 'fast') == 2


def test_benchmark_train_iter_fast_train_and_profile(tmp_path, capsys):
    """``--switches none fast-train``: plain and fast rows per config; ``--profile``: where the host time goes."""
    out_json = tmp_path / 'iter.json'
    assert call_tool(BENCHMARK, 'train-iter', 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py', '--device', 'cpu',
                     '--shape', '64', '64', '--batch-size', '1', '--warmup', '0', '--repeats', '1', '--switches',
                     'none', 'fast-train', '--profile', '1', '--out', str(out_json)) == 0
    rows = json.loads(out_json.read_text())['rows']
    assert [(r['config'], r['fast_train']) for r in rows] == [('mask-rcnn_mavit-t_fpn_1x_coco', False),
                                                              ('mask-rcnn_mavit-t_fpn_1x_coco [fast-train]', True)]
    for r in rows:
        ops = r['profile']['top_host_ops']
        assert ops and all(name.startswith('aten::') and ms >= 0 for name, ms, _ in ops)
        assert [ms for _, ms, _ in ops] == sorted((ms for _, ms, _ in ops), reverse=True)
        assert any('conv' in name for name, _, _ in ops)  # convolutions dominate a detector's CPU step
        phases = r['profile']['phases']
        assert list(phases) == [
            'data_preprocessor', 'backbone', 'neck', 'rpn_head.loss_and_predict', 'roi_head.loss', 'backward',
            'optimizer step'
        ]
        assert all(p['host_ms'] > 0 for p in phases.values())
        # the phases follow one another inside the step: together no longer than it
        assert sum(p['host_ms'] for p in phases.values()) <= r['profile']['wall_ms']
    out = capsys.readouterr().out
    assert 'top host ops: aten::' in out and 'rpn_head.loss_and_predict' in out


def test_phases_label_a_step_and_restore_the_methods():
    from torch import nn

    from mavit_mm.analysis.benchmarking import phases, profile_steps

    class Head(nn.Linear):

        def loss(self, x):
            return self(x).sum()

    class Model(nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(4, 4)
            self.bbox_head = Head(4, 1)

        def forward(self, x):
            return self.bbox_head.loss(self.backbone(x))

    model = Model()
    own = model.backbone.forward  # an instance's own forward, as CUDA graphs install, comes back as it was
    model.backbone.forward = own
    x = torch.randn(3, 4)
    with phases(model) as labels:
        assert labels == ['backbone', 'bbox_head.loss']
        p = profile_steps(lambda: model(x), torch.device('cpu'), steps=2, labels=labels)
    assert set(p['phases']) == {'backbone', 'bbox_head.loss'} and p['phases']['backbone']['host_ms'] > 0
    assert model.backbone.forward is own and 'loss' not in vars(model.bbox_head)


def test_synthetic_detection_batch_has_uint8_masks_as_the_pipeline_makes():
    from mavit_mm.analysis.bench.train_iter import synthetic_batch
    packed = synthetic_batch('mmdet', 2, (32, 48))
    masks = [s.gt_instances.masks for s in packed['data_samples']]
    assert all(m.masks.dtype == np.uint8 and m.masks.shape == (10, 32, 48) for m in masks)
    assert all(m.masks.max() == 1 for m in masks)  # still the demo's shapes, as 0 / 1


def test_benchmark_backbone_runs_on_cpu(tmp_path):
    """Each fast path, the CUDA-graph rows (the plain forward on CPU) and a torchvision peer on the same inputs;
    ratios against the same arch's plain run; with_cp (here ffn + stem) only in training steps; the sweep has
    all three attention kinds."""
    out_json = tmp_path / 'bench.json'
    assert call_tool(BENCHMARK, 'backbone', '--device', 'cpu', '--arch', 't', '--peers', 'ResNet-50 (torchvision)',
                     '--fast-path', 'auto', '--cuda-graphs', '--with-cp', 'ffn,stem', '--settings', 'cls', 'train',
                     '--batch-size', '1', '--shape', '64', '64', '--warmup', '1', '--repeats', '1', '--precision',
                     'fp32', '--sweep', str(tmp_path / 'sweep.png'), '--sweep-sizes', '64', '--out', str(out_json)) == 0
    result = json.loads(out_json.read_text())
    labels = [(r['setting'], r['model']) for r in result['rows']]
    assert result['cuda_graphs'] == 'all'
    assert labels == [('cls', 'MAViT-T (off)'), ('cls', 'MAViT-T (auto)'), ('cls', 'MAViT-T (graphs)'),
                      ('cls', 'ResNet-50 (torchvision)'), ('train', 'MAViT-T (off)'), ('train', 'MAViT-T (auto)'),
                      ('train', 'MAViT-T (auto, with_cp=ffn+stem)'), ('train', 'MAViT-T (graphs)'),
                      ('train', 'MAViT-T (graphs, with_cp=ffn+stem)'), ('train', 'ResNet-50 (torchvision)')]
    for r in result['rows']:
        ref = next(x for x in result['rows'] if x['setting'] == r['setting'] and x['model'].endswith('(off)'))
        assert abs(r['speedup_vs_off'] - ref['median_ms'] / r['median_ms']) < 1e-9
    assert {r['attention'] for r in result['sweep']} == {'MALA (naive)', 'MALA (Triton)', 'softmax (SDPA)'}
    assert (tmp_path / 'sweep.png').stat().st_size > 0 and result['env']['torch'] == torch.__version__


@pytest.mark.parametrize('args,message', [
    (['backbone', '--shape', '0', '0'], 'argument --shape: must be a positive integer, got 0'),
    (['backbone', '--peers', 'AlexNet'], "--peers: ['AlexNet'] not installed here"),
    (['backbone', '--with-cp', 'mlp'], "--with-cp mlp: unknown part(s) ['mlp']"),
    (['backbone', '--precision', 'int8'], "argument --precision: invalid choice: 'int8'"),
    (['model', 'configs/nope.py', '--device', 'cpu'], 'nope.py'),
    (['train-iter', 'configs/nope.py', '--device', 'cpu'], 'config configs/nope.py not found'),
    ([
        'train-iter', 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py', '--device', 'cpu', '--switches',
        'cuda-graphs=train'
    ], 'cuda-graphs replays CUDA graphs: it needs --device cuda'),
    (['model', 'configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py', '--device', 'cpu', '--cuda-graphs'
      ], '--cuda-graphs replays CUDA graphs: it needs --device cuda'),
    (['memory', '--device', 'tpu'], "--device 'tpu' is not a device"),
])
def test_benchmark_says_what_is_wrong(args, message, capsys):
    assert call_tool(BENCHMARK, *args) == 2
    assert message in capsys.readouterr().err


def test_get_flops_checks_the_shape(capsys):
    assert call_tool('tools/analysis_tools/get_flops.py', 'configs/imagenet/mavit-t_8xb128_in1k.py', '--shape', '0',
                     '0') == 2
    assert 'argument --shape: must be a positive integer, got 0' in capsys.readouterr().err


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
    out = run_tool('tools/analysis_tools/count_negative_scores.py', 'configs/toy/mavit-t_toy-cls.py', str(ckpt),
                   '--images', str(tmp_path / 'img'), '--size', '64', '--out', str(out_json))
    assert out.returncode == 0, out.stderr[-2000:]
    (row, ) = json.loads(out_json.read_text())
    assert row['checkpoint'] == 'epoch_1.pth'
    assert row['total'] == 2 * (2 * 256**2 * 1 + 2 * 64**2 * 2)
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


def test_benchmark_onnx_times_onnxruntime_beside_pytorch_on_cpu(tmp_path, capsys):
    """``benchmark.py onnx``: the exported MAViT-T in onnxruntime and PyTorch's two paths, one run; every row
    computes the fp32 function (onnxruntime within 1e-4 of the largest output, bf16 within 5e-2)."""
    pytest.importorskip('onnxruntime')
    out_json = tmp_path / 'onnx.json'
    assert call_tool(BENCHMARK, 'onnx', '--device', 'cpu', '--shape', '64', '96', '--warmup', '1', '--repeats', '2',
                     '--ort-repeats', '2', '--out', str(out_json)) == 0
    result = json.loads(out_json.read_text())
    runtimes = [(r['runtime'], r['precision']) for r in result['rows']]
    assert runtimes == [('onnxruntime ' + result['env']['onnxruntime'].split()[0] + ', CPUExecutionProvider', 'fp32'),
                        ("PyTorch, fast_path='off'", 'fp32'), ("PyTorch, fast_path='off'", 'bf16'),
                        ("PyTorch, fast_path='auto'", 'fp32'), ("PyTorch, fast_path='auto'", 'bf16')]
    diffs = {k: r['rel_diff'] for k, r in zip(runtimes, result['rows'])}
    assert all(d <= (1e-4 if p == 'fp32' else 5e-2) for (_, p), d in diffs.items())
    assert result['rows'][1]['speedup_vs_eager_fp32'] == 1.0 and all(r['median_ms'] > 0 for r in result['rows'])
    assert '| runtime | precision | median ms |' in capsys.readouterr().out
    assert call_tool(BENCHMARK, 'onnx', '--device', 'cpu', '--providers', 'NoSuchProvider') == 2


def test_benchmark_runner_reads_time_and_data_time_of_a_real_run(tmp_path):
    """``benchmark.py runner``: tools/train.py on freshly made toy data, the medians of its logged ``time`` and
    ``data_time`` after the warm-up iterations (checked against the run's own log lines)."""
    from mavit_mm.analysis.bench.runner import iteration_times
    log = tmp_path / 'scalars.json'
    log.write_text('\n'.join(
        json.dumps(d) for d in [
            dict(time=9.0, data_time=5.0, loss=1.0),
            dict(time=1.0, data_time=0.1, loss=1.0),
            dict(time=3.0, data_time=0.3, loss=1.0),
            dict(time=2.0, data_time=0.2, loss=1.0),
            dict(mIoU=50.0)
        ]))
    assert iteration_times(str(log), warmup=1) == dict(time_ms=2000.0, data_time_ms=200.0, data_share=0.1, iters=3)
    with pytest.raises(ValueError, match='no training iteration logged after 4'):
        iteration_times(str(log), warmup=4)
    out_json = tmp_path / 'runner.json'
    assert call_tool(BENCHMARK, 'runner', 'configs/toy/upernet_mavit-t_toy.py', '--toy-root', str(tmp_path / 'toy'),
                     '--toy-images', '4', '--iters', '4', '--warmup', '1', '--switches', 'none', '--out',
                     str(out_json)) == 0
    (row, ) = json.loads(out_json.read_text())['rows']
    assert row['config'] == 'upernet_mavit-t_toy' and row['iters'] == 3 and row['switch'] == 'none'
    assert 0 < row['data_time_ms'] < row['time_ms']
    assert row['data_share'] == pytest.approx(row['data_time_ms'] / row['time_ms'])


def test_benchmark_backbone_profile_names_the_host_costs(tmp_path, capsys):
    """``--profile 1``: every row gets the profiler's summary, whose top host operators are the model's own
    (convolutions for MAViT; on CPU there are no kernel launches to count). In fp32: CPU autocast runs grouped
    convolutions group by group, and the profiler would parse a hundred times the events."""
    out_json = tmp_path / 'bench.json'
    assert call_tool(BENCHMARK, 'backbone', '--device', 'cpu', '--arch', 't', '--peers', '--fast-path', 'auto',
                     '--settings', 'cls', '--batch-size', '1', '--shape', '64', '64', '--warmup', '0', '--repeats', '1',
                     '--precision', 'fp32', '--profile', '1', '--out', str(out_json)) == 0
    rows = json.loads(out_json.read_text())['rows']
    assert [r['model'] for r in rows] == ['MAViT-T (off)', 'MAViT-T (auto)']
    for r in rows:
        ops = [name for name, ms, calls in r['profile']['top_host_ops']]
        assert any('convolution' in op for op in ops) and r['profile']['steps'] == 1
    assert 'top host ops: aten::' in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason='kernel launches need a CUDA GPU')
def test_profile_counts_the_kernels_a_step_launches():
    from mavit_mm.analysis.benchmarking import profile_steps
    x = torch.randn(1024, device='cuda')

    def step():
        for _ in range(7):
            x.mul_(1.0)
        return x.sum()

    p = profile_steps(step, torch.device('cuda'), steps=2)
    name, launches, ms = p['top_kernels'][0]
    assert launches == 7 and 'mul' in name.lower() and ms > 0
    assert p['kernel_launches'] >= 8  # the seven multiplications and the sum


def test_profile_table_ranks_the_operators_a_new_size_adds():
    from mavit_mm.analysis.bench.shapes import growth_by_op, host_time_by_op
    a = torch.randn(64, 64)

    def step(new):
        b = torch.mm(a, a)
        if new:  # what a first sighting adds: more work in one operator, and one more operator
            for _ in range(20):
                b = torch.mm(b, a)
            torch.cumsum(b, 0)

    new = host_time_by_op(step, [True, True])
    seen = host_time_by_op(step, [False, False])
    assert new['aten::mm'][1] == 21 and seen['aten::mm'][1] == 1  # calls per step
    assert 'aten::cumsum' in new and 'aten::cumsum' not in seen
    rows = growth_by_op(new, seen, top=2)
    assert rows[0]['op'] == 'aten::mm' and rows[0]['new_ms'] > rows[0]['seen_ms'] > 0
    assert rows[1]['op'] == 'aten::cumsum' and rows[1]['seen_ms'] == 0 and rows[1]['calls'] == 1


def test_launch_counter_counts_computing_operators_and_triton_launches():
    from mavit_mm.analysis.bench.launches import counting
    a = torch.randn(8, 8, requires_grad=True)
    with counting() as counts:
        b = (a @ a).view(64).t()  # a matmul; a view and a no-op transpose launch nothing
        c = torch.empty(3)  # an allocation neither
        loss = b.sum() + c.sum()
        assert counts['operators'] == 4  # mm, sum, sum, add
        loss.backward()
    assert counts['triton'] == 0
    assert counts['operators'] >= 4 + 2  # and the backward's: at least mm's two gradient products
    before = counts['operators']
    torch.mm(a, a)  # outside the block: not counted
    assert counts['operators'] == before

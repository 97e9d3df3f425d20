"""The saved-for-backward accounting (mavit_mm/analysis/activation_memory.py) against byte counts
worked out by hand, the FFN's selective recomputation (``with_cp='ffn'``) measured with it, and the
tool that prints it."""
import json

import torch
from torch import nn

from mavit_mm import MAViT
from mavit_mm.analysis.activation_memory import PARAMETERS, saved_activations
from helpers import call_tool

F32 = 4


def test_linear_gelu_linear_by_hand():
    """x (3, 4) does not need grad: Linear 0 keeps x (for its weight grad), GELU keeps its input,
    Linear 2 keeps GELU's output and its own weight (for the input grad)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    total, rows = saved_activations(model, lambda: model(x), group=False)
    assert rows == {'0': 3 * 4 * F32, '1': 3 * 8 * F32, '2': 3 * 8 * F32, PARAMETERS: 8 * 2 * F32}
    assert total == (12 + 24 + 24) * F32
    total_grouped, grouped = saved_activations(model, lambda: model(x))
    assert total_grouped == total and grouped == {'*': total, PARAMETERS: 8 * 2 * F32}


class TwoViews(nn.Module):

    def forward(self, x):
        a, b = x.exp().chunk(2, dim=1)  # both views of one (2, 6) storage are saved by the product
        return a * b


def test_views_of_one_storage_count_once():
    x = torch.randn(2, 6, requires_grad=True)
    total, rows = saved_activations(TwoViews(), lambda: TwoViews()(x), group=False)
    # exp keeps its (2, 6) output; the product keeps two views of that same storage; x itself is
    # not saved by anyone
    assert total == 2 * 6 * F32


class NestedBackward(nn.Module):
    """A forward that runs (and finishes) a backward of its own, as the kernels' self-check does."""

    def forward(self, x):
        y = torch.randn(5, 7, requires_grad=True)
        torch.autograd.grad((y.sin() * y).sum(), y)  # saves, then frees, 2 x (5, 7)
        return x.cos()


def test_tensors_freed_inside_the_forward_are_not_counted():
    x = torch.randn(3, 3, requires_grad=True)
    total, _ = saved_activations(NestedBackward(), lambda: NestedBackward()(x), group=False)
    assert total == 3 * 3 * F32  # cos keeps its input only


def test_ffn_recompute_keeps_the_ffn_input_only():
    """MAViT-T stage 1 at a 64 x 96 image: 16 x 24 tokens, width 64, hidden width 3.5 x 64 = 224. The plain
    FFN keeps fc1's input and three hidden maps per block (GELU's input, the depthwise conv's input, fc2's
    input); with_cp='ffn' keeps the FFN's input only, and nothing outside the FFNs changes."""
    hidden = 16 * 24 * 224 * F32
    width = 16 * 24 * 64 * F32
    x = torch.randn(1, 3, 64, 96)
    rows = {}
    for key, cp in ((False, False), ('ffn', ['ffn'])):
        torch.manual_seed(0)
        model = MAViT(arch='tiny', drop_path_rate=0.0, with_cp=cp).train()
        rows[key] = saved_activations(model, lambda: model(x))
    plain, ffn = rows[False][1], rows['ffn'][1]
    assert [plain[f'layers.0.blocks.*.ffn.{n}'] for n in ('act', 'dwconv', 'fc2')] == [2 * hidden] * 3
    assert plain['layers.0.blocks.*.ffn.fc1'] == 2 * width
    assert ffn['layers.0.blocks.*.ffn'] == 2 * width  # the checkpoint's input: the FFN's input
    assert not any(k.startswith('layers.0.blocks.*.ffn.') for k in ffn)
    same = {k: v for k, v in plain.items() if '.ffn' not in k and k != PARAMETERS}
    assert same == {k: v for k, v in ffn.items() if '.ffn' not in k and k != PARAMETERS}
    assert rows['ffn'][0] < 0.8 * rows[False][0]


def test_benchmark_memory_on_cpu(tmp_path, capsys, monkeypatch):
    out_json = tmp_path / 'mem.json'
    assert call_tool('tools/analysis_tools/benchmark.py', 'memory', '--device', 'cpu', '--arch', 't', '--shape', '64',
                     '96', '--batch-size', '1', '--fast-path', 'off', '--with-cp', 'none', 'ffn', 'block', '--out',
                     str(out_json)) == 0
    result = json.loads(out_json.read_text())
    totals = result['totals_mib']
    assert list(totals) == ['off', 'off, with_cp=ffn', 'off, with_cp=block']
    assert totals['off, with_cp=block'] < totals['off, with_cp=ffn'] < totals['off']
    for label, total in totals.items():  # the rows add up to the total
        assert abs(sum(r.get(label, 0.0) for r in result['rows_mib'].values()) - total) < 1e-6
    out = capsys.readouterr().out
    assert '| total |' in out and 'off, with_cp=ffn / off' in out
    from mavit_mm.ops import mala
    monkeypatch.setattr(mala, '_INTERPRET', False)
    assert call_tool('tools/analysis_tools/benchmark.py', 'memory', '--device', 'cpu', '--fast-path', 'auto') == 2
    assert 'TRITON_INTERPRET=1' in capsys.readouterr().err

"""The swap tool over the stock configs mmdet and mmseg ship: one config per model family here, every
config with ``--swap-sweep-full``. No config may fail; a refusal must say why."""
import pytest

from mavit_mm.config.swap_sweep import OUTCOMES, counts, markdown_table, one_per_family, stock_configs, sweep
from helpers import call_tool


def _check(rows, capsys):
    total = counts(rows)
    with capsys.disabled():
        print(f'\nswap sweep over {len(rows)} configs: ' + ', '.join(f'{v} {k}' for k, v in total.items()))
    failed = [f'{r["config"]}: {r["reason"]}' for r in rows if r['outcome'] == 'failed']
    assert not failed, '\n'.join(failed)
    assert all(r['reason'] for r in rows if r['outcome'] in ('refused', 'stock config unusable here'))
    return total


def test_stock_configs_are_the_packages_own():
    det, seg = stock_configs('mmdet'), stock_configs('mmseg')
    assert 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py' in det and len(det) > 500
    assert 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py' in seg and len(seg) > 500
    assert not any('_base_' in c for c in det + seg)
    families = one_per_family(det)
    assert len(families) == len({c.split('/')[0] for c in det}) and families[0] == det[0]


def test_swap_sweep_one_config_per_family(capsys):
    configs = one_per_family(stock_configs('mmdet') + stock_configs('mmseg'))
    rows = sweep(configs, forward=True, log=lambda line: None, workers=2)  # CI's 2 cores
    total = _check(rows, capsys)
    assert total['swapped'] > len(configs) // 2
    table = markdown_table(rows)
    assert table.splitlines()[-1].startswith(f'| **all** | {len(rows)} | {total["swapped"]} |')
    assert all(f'| {c.split("/")[0]} |' in table for c in configs)
    assert len(table.splitlines()[0].split('|')) == len(OUTCOMES) + 5


def test_swap_sweep_cli(tmp_path, capsys):
    md = tmp_path / 'sweep.md'
    assert call_tool('tools/misc/swap_sweep.py', 'mmdet::atss/atss_r50_fpn_1x_coco.py', 'mmdet::ssd/ssd300_coco.py',
                     '--out-md', str(md)) == 0
    out = capsys.readouterr().out
    assert '2 configs in' in out and '1 swapped, 1 refused, 0 not a backbone model' in out
    assert '[2/2] refused' in out and 'SSDNeck' in out
    lines = md.read_text().splitlines()
    assert lines[2] == '| mmdet::atss | 1 | 1 | 0 | 0 | 0 | 0 |  |'
    assert lines[3] == "| mmdet::ssd | 1 | 0 | 1 | 0 | 0 | 0 | neck passes the backbone's maps on (SSD) |"


@pytest.mark.swap_sweep_full
def test_swap_sweep_every_stock_config(capsys):
    rows = sweep(stock_configs('mmdet') + stock_configs('mmseg'), forward=True, log=lambda line: None, workers=2)
    _check(rows, capsys)

"""Write the model zoo: configs/*/metafile.yml, model-index.yml and docs/model_zoo.md.

    python tools/misc/gen_model_zoo.py              # measures every config (~10 min on 2 cores)
    python tools/misc/gen_model_zoo.py --reuse      # reuse the figures already in the metafiles

Params and FLOPs are measured (mavit_mm.analysis.complexity, at the paper's input shapes); results
are the paper's (Tables 2-5), marked as such in every metafile entry: mavit-mm has not retrained them.
"""
import argparse
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List

import yaml

from mavit_mm.analysis.complexity import PAPER_SHAPES, model_complexity
from mavit_mm.analysis.paper import PAPER_ROWS, PaperRow
from mavit_mm.config.run_config import build_model, load_model_config
from mavit_mm.utils.fileio import write_text_atomic

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COLLECTIONS = {
    'imagenet': 'MAViT',
    'retinanet': 'RetinaNet MAViT',
    'mask_rcnn': 'Mask R-CNN MAViT',
    'cascade_rcnn': 'Cascade Mask R-CNN MAViT',
    'sem_fpn': 'Semantic FPN MAViT',
    'upernet': 'UperNet MAViT'
}
PAPER = dict(Title='Rectifying Magnitude Neglect in Linear Attention', URL='https://arxiv.org/abs/2507.00698')
RESULTS_NOTE = ("Results are the paper's figures ({table}), not a mavit-mm training run; Params and "
                "FLOPs were measured by tools/analysis_tools/get_flops.py (paper convention, {h}x{w}).")


def measure(name: str, row: PaperRow) -> Dict[str, float]:
    cfg = load_model_config(osp.join(ROOT, 'configs', row.folder, f'{name}.py'))
    shape = PAPER_SHAPES[cfg.default_scope]
    out = model_complexity(build_model(cfg), cfg.default_scope, shape)
    print(
        f'{name:60s} {out["params"] / 1e6:8.2f} M {out["flops_paper"] / 1e9:8.1f} G '
        f'{out["flops_full"] / 1e9:8.1f} G',
        flush=True)
    return out


def metafile_entry(name: str, row: PaperRow, fig: Dict[str, float]) -> dict:
    cfg_rel = f'configs/{row.folder}/{name}.py'
    meta = {
        'Training Data': row.dataset if row.dataset != 'ADE20K' else 'ADE20K',
        'Training Resources': '8x GPUs',
        'Schedule': row.schedule,
        'Parameters': int(fig['params']),
        'FLOPs': int(fig['flops_paper']),
        'FLOPs (full count)': int(fig['flops_full']),
        'Input Shape': 'x'.join(map(str, fig['shape']))
    }
    if row.dataset == 'ImageNet-1k':
        meta['Epochs'] = 300
    elif row.dataset == 'COCO':
        meta['Epochs'] = 36 if '3x' in name else 12
    else:
        meta['Iterations'] = 160000 if name.startswith('upernet') else 80000
    results = []
    box = {k: v for k, v in row.metrics.items() if k.startswith('box')}
    mask = {k: v for k, v in row.metrics.items() if k.startswith('mask')}
    if box:
        results.append({'Task': 'Object Detection', 'Dataset': row.dataset, 'Metrics': box})
    if mask:
        results.append({'Task': 'Instance Segmentation', 'Dataset': row.dataset, 'Metrics': mask})
    if not (box or mask):
        results.append({'Task': row.task, 'Dataset': row.dataset, 'Metrics': dict(row.metrics)})
    h, w = fig['shape']
    return {
        'Name': name,
        'In Collection': COLLECTIONS[row.folder],
        'Config': cfg_rel,
        'Metadata': meta,
        'Results': results,
        'Results Source': f'paper, {row.table}',
        'Notes': RESULTS_NOTE.format(table=row.table, h=h, w=w)
    }


def read_figures() -> Dict[str, Dict[str, float]]:
    figures = {}
    for folder in COLLECTIONS:
        path = osp.join(ROOT, 'configs', folder, 'metafile.yml')
        if not osp.isfile(path):
            continue
        for m in yaml.safe_load(open(path))['Models']:
            md = m['Metadata']
            figures[m['Name']] = dict(
                params=md['Parameters'],
                flops_paper=md['FLOPs'],
                flops_full=md['FLOPs (full count)'],
                shape=[int(x) for x in md['Input Shape'].split('x')])
    return figures


def zoo_markdown(figures: Dict[str, Dict[str, float]]) -> str:
    lines = [
        '# Model zoo', '',
        'Every config that reproduces a row of the paper\'s Tables 2-5: Params and FLOPs measured here '
        'beside the paper\'s, and the paper\'s results. FLOPs follow the paper\'s convention (module '
        'operations only: convolutions, linear layers, norms, activations; attention products not '
        'counted) at its input shapes: 224x224 (classification), 800x1280 (detection; two-stage heads get '
        '1000 RoIs and their mask heads the first 100, as mmdet 2.x\'s forward_dummy), 512x2048 '
        '(segmentation). Two-stage detectors come out 1.4-2.9 % under the paper (a constant ~6-20 G that we '
        'have not traced); classification within 1.3 % (the paper rounds to 0.1 G), RetinaNet, Semantic FPN '
        'and UperNet within 0.2 %. "full" counts every traced op, attention products '
        'included (mmengine.analysis, fvcore\'s convention of one multiply-accumulate per FLOP, so it '
        'leaves out the bias and norm terms the paper\'s convention adds).', '',
        'Generated by `python tools/misc/gen_model_zoo.py` (it also writes `configs/*/metafile.yml` and '
        '`model-index.yml`); one config: `python tools/analysis_tools/get_flops.py CONFIG`. The results are '
        'the paper\'s; mavit-mm has not retrained these models (`tools/analysis_tools/collect_results.py` puts '
        'your runs beside them).', ''
    ]
    by_folder: Dict[str, List[str]] = defaultdict(list)
    for name, row in PAPER_ROWS.items():
        by_folder[row.folder].append(name)
    for folder, names in by_folder.items():
        lines += [
            f'## {COLLECTIONS[folder]}', '',
            '| config | Params (M) | paper | FLOPs (G) | paper | diff | full FLOPs (G) | paper results |',
            '|---|---|---|---|---|---|---|---|'
        ]
        for name in names:
            row, fig = PAPER_ROWS[name], figures[name]
            p, f = fig['params'] / 1e6, fig['flops_paper'] / 1e9
            res = ', '.join(f'{k} {v}' for k, v in row.metrics.items()
                            if k in ('box AP', 'mask AP', 'mIoU', 'Top 1 Accuracy'))
            lines.append(f'| [{name}](../configs/{folder}/{name}.py) | {p:.2f} | {row.params} | {f:.1f} | '
                         f'{row.flops} | {100 * (f / row.flops - 1):+.1f} % | '
                         f'{fig["flops_full"] / 1e9:.1f} | {res} |')
        lines.append('')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reuse', action='store_true', help='take Params/FLOPs from the metafiles')
    parser.add_argument(
        '--configs', nargs='+', metavar='NAME', help='measure only these configs, the rest from the metafiles')
    parser.add_argument(
        '--check', action='store_true', help='write nothing; exit 1 if a file differs from what would be written')
    args = parser.parse_args()
    figures = read_figures() if args.reuse or args.configs else {}
    for name in (args.configs or ([] if args.reuse else PAPER_ROWS)):
        if name not in PAPER_ROWS:
            sys.exit(f'{name!r} is not a config of the paper\'s tables: {sorted(PAPER_ROWS)}')
        figures[name] = measure(name, PAPER_ROWS[name])
    missing = sorted(set(PAPER_ROWS) - set(figures))
    if missing:
        sys.exit(f'no figures for {missing}: run without --reuse')
    outputs = render_all(figures)
    if args.check:
        stale = [
            p for p, text in outputs.items()
            if not osp.isfile(osp.join(ROOT, p)) or open(osp.join(ROOT, p)).read() != text
        ]
        if stale:
            sys.exit(f'out of date: {stale}; run python tools/misc/gen_model_zoo.py --reuse')
        print('model zoo files are up to date')
        return
    for path, text in outputs.items():
        write_text_atomic(text, osp.join(ROOT, path))
    print('wrote configs/*/metafile.yml, model-index.yml, docs/model_zoo.md')


def render_all(figures: Dict[str, Dict[str, float]]) -> Dict[str, str]:
    """Repository path -> text of every generated file."""
    outputs = {}
    per_folder: Dict[str, list] = defaultdict(list)
    for name, row in PAPER_ROWS.items():
        per_folder[row.folder].append(metafile_entry(name, row, figures[name]))
    for folder, models in per_folder.items():
        collection = {
            'Name': COLLECTIONS[folder],
            'Metadata': {
                'Training Data': models[0]['Metadata']['Training Data'],
                'Architecture': ['MAViT', 'Magnitude-Aware Linear Attention']
            },
            'Paper': PAPER,
            'README': '../../docs/model_zoo.md'
        }  # relative to the metafile
        outputs[f'configs/{folder}/metafile.yml'] = yaml.safe_dump({
            'Collections': [collection],
            'Models': models
        },
                                                                   sort_keys=False,
                                                                   width=120)
    outputs['model-index.yml'] = yaml.safe_dump({'Import': [f'configs/{folder}/metafile.yml' for folder in per_folder]},
                                                sort_keys=False)
    outputs['docs/model_zoo.md'] = zoo_markdown(figures)
    return outputs


if __name__ == '__main__':
    main()

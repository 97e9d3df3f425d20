"""Print the effective training recipe of configs, optionally beside the authors' release.

    python tools/analysis_tools/print_recipe.py CONFIG [CONFIG ...] [--compare release] [--iters 0 500 ...]
                                          [--cfg-options k=v ...]

The recipe is resolved through the config's ``_base_`` / ``mmdet::`` chain and counted on the built model:
model settings that change training, the optimizer and every parameter's weight decay / lr, the lr at
chosen iterations (mmengine's own schedulers), precision and loss scale, batch, pipeline, sampler, EMA and
evaluation. ``--compare release`` prints a table per config against the release's recipe
(mavit_mm/analysis/release_recipes.py) and exits 1 if a difference is not documented as deliberate.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from mavit_mm.analysis.recipe import format_rows  # noqa: E402
from mavit_mm.analysis.recipe import compare_with_release, default_probes, effective_recipe, undocumented  # noqa: E402
from mavit_mm.config.run_config import build_model, load_config  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='config files (or mmdet::/mmseg::/mmpretrain:: names)')
    parser.add_argument('--compare', choices=['release'], help='print beside the release recipe')
    parser.add_argument('--iters', type=int, nargs='+', help='iterations to print the lr at')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args()
    if args.iters and min(args.iters) < 0:
        parser.error(f'--iters must be >= 0, got {args.iters}')
    return args


def main() -> int:
    args = parse_args()
    MMLogger.get_instance('print_recipe', log_level='WARNING')  # not every param group's options
    missing = []
    for path in args.configs:
        cfg = load_config(path)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        if cfg.model.get('backbone', {}).get('init_cfg'):
            cfg.model.backbone.init_cfg = None  # the recipe needs no weights
        name = osp.splitext(osp.basename(path.split('::')[-1]))[0]
        model = build_model(cfg)
        if args.compare:
            rows = compare_with_release(cfg, name, model)
            print(format_rows(name, rows) + '\n')
            missing += [f'{name}: {r.field}' for r in undocumented(rows)]
            continue
        plain = effective_recipe(cfg, name)
        probes = args.iters or default_probes(plain['total_iters'], plain['epoch_length'])
        recipe = effective_recipe(cfg, name, model, probes=probes)
        print(f'# {name}')
        for key, value in recipe.items():
            if not key.startswith('_'):
                print(f'{key:>15}: {value}')
        print()
    if missing:
        print('Differences from the release not documented as deliberate:\n  ' + '\n  '.join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

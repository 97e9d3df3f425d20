"""Swap MAViT into every config the installed mmdet / mmseg ship, and say what happened to each.

    python tools/misc/swap_sweep.py [CONFIG ...] [--packages mmdet mmseg] [--one-per-family] [--forward]
                                    [--arch tiny] [--workers N] [--out-json FILE] [--out-md FILE]

Each config under ``<package>/.mim/configs`` (or each CONFIG given, ``mmdet::...`` or a path) goes
through what ``tools/misc/swap_backbone.py`` does and the new model is built (``--forward``: it runs once
on a 128 x 128 image: backbone and neck, or the whole model where the heads read the backbone). Prints one line
per config and the counts of swapped / refused (with the reason) / not a backbone model / stock config
unusable here / failed; exits 1 if any failed. ``--out-md`` writes the per-family table of docs/swap_backbone.md.
"""
import argparse
import json
import sys
import time

from mavit_mm.config.swap_sweep import PACKAGES, counts, markdown_table, one_per_family, stock_configs, sweep
from mavit_mm.utils.fileio import write_text_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='*', help='these configs instead of the packages\' own')
    parser.add_argument('--packages', nargs='+', choices=PACKAGES, default=list(PACKAGES))
    parser.add_argument('--one-per-family', action='store_true', help='the first config of each model family')
    parser.add_argument('--forward', action='store_true', help='run each swapped backbone and neck once')
    parser.add_argument('--arch', default='tiny')
    parser.add_argument('--workers', type=int, default=1, help='processes (one core each)')
    parser.add_argument('--out-json', help='every row as json')
    parser.add_argument('--out-md', help='the per-family table as markdown')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    import mavit_mm  # noqa: F401  (registers MAViT)
    configs = args.configs or [c for p in args.packages for c in stock_configs(p)]
    if args.one_per_family:
        configs = one_per_family(configs)
    start = time.perf_counter()
    rows = sweep(configs, args.arch, args.forward, log=lambda line: print(line, flush=True), workers=args.workers)
    total = counts(rows)
    print(f'{len(rows)} configs in {time.perf_counter() - start:.0f} s: ' + ', '.join(f'{v} {k}'
                                                                                      for k, v in total.items()))
    for r in rows:
        if r['outcome'] == 'failed':
            print(f'FAILED {r["config"]}: {r["reason"]}')
    if args.out_json:
        write_text_atomic(json.dumps(rows, indent=1), args.out_json)
    if args.out_md:
        write_text_atomic(markdown_table(rows) + '\n', args.out_md)
    return 1 if total['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())

"""How much padding a batch to a coarser shape changes a backbone's features at the image's own pixels.

    python tools/analysis_tools/padding_effect.py --shape 800 1067 --divisors 64 160

An image of ``--shape`` (a stand-in for a normalised photo) through each backbone (MAViT-T, mmdet's Swin-T and
ResNet-50, their own random initialisation, eval mode, fp32 on the CPU), padded to multiples of 32 (mmdet's
padding) and of each ``--divisors`` entry (:class:`mavit_mm.engine.shape_buckets.BatchShapeBucketPad`): the
relative change of each stage's output over the region the image covers (:mod:`mavit_mm.analysis.padding`).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mavit_mm.analysis.padding import compare, stock_backbones  # noqa: E402
from mavit_mm.utils.cli_types import positive_int  # noqa: E402
from mavit_mm.utils.fileio import write_text_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--shape',
        type=positive_int,
        nargs=2,
        default=[800, 1067],
        metavar=('H', 'W'),
        help="the image's own size (default: a 640x480 COCO image resized to 1333x800)")
    parser.add_argument(
        '--divisors', type=positive_int, nargs='+', default=[64, 160], help='pad to multiples of each (against 32)')
    parser.add_argument('--backbones', nargs='+', choices=list(stock_backbones()), default=list(stock_backbones()))
    parser.add_argument('--out', help='write the rows as json (atomically)')
    args = parser.parse_args()
    rows = compare(args.backbones, *args.shape, args.divisors)
    print(f'image {args.shape[0]}x{args.shape[1]}, padded to multiples of 32 against each divisor; '
          'relative change of each stage over the image region')
    print('| backbone | padded to | stage 1 | stage 2 | stage 3 | stage 4 |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        cells = ' | '.join(f'{100 * c:.2f} %' for c in r['change'])
        print(f'| {r["backbone"]} | {r["padded"][0]}x{r["padded"][1]} (/{r["divisor"]}) | {cells} |')
    if args.out:
        write_text_atomic(json.dumps(dict(shape=args.shape, rows=rows), indent=2) + '\n', args.out)


if __name__ == '__main__':
    main()

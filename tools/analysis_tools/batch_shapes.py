"""The padded batch shapes a config's training batches take: how many, how often new, how many graphs replay.

    python tools/analysis_tools/batch_shapes.py configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py \
        --data-root data/coco --iters 320 --size-divisors 64 160

Iterates the config's own train dataloader on the CPU (its sampler with ``--seed``, its pipeline) through its own
data preprocessor in training mode (its padding and batch augments; no model), then pads each batch on, per
``--size-divisors`` entry, as ``BatchShapeBucketPad(size_divisor=D)`` would. Per row: distinct shapes,
iterations at a shape's first and second sighting (a new size; a training-graph capture), the share replayed
by ``CUDAGraphHook(max_graphs=--max-graphs, capture_after=--capture-after)``, and the extra pixels against the
preprocessor's own padding (:mod:`mavit_mm.analysis.batch_shapes`).
"""
import argparse
import json
import os.path as osp
import sys

from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mavit_mm.analysis.batch_shapes import batch_shapes, bucketed, summarize  # noqa: E402
from mavit_mm.config.run_config import load_config, set_data_root  # noqa: E402
from mavit_mm.utils.cli_types import non_negative_int, positive_int  # noqa: E402
from mavit_mm.utils.fileio import write_text_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help="a train config: a file, or a stock one as 'mmdet::swin/....py'")
    parser.add_argument('--data-root', help="dataset root, replacing the config's")
    parser.add_argument('--iters', type=positive_int, default=320, help='training batches to read')
    parser.add_argument('--seed', type=non_negative_int, default=0, help="the sampler's seed")
    parser.add_argument('--size-divisors', type=positive_int, nargs='*', default=[], help='bucket sizes to compare')
    parser.add_argument('--max-graphs', type=positive_int, default=48, help="CUDAGraphHook's max_graphs")
    parser.add_argument(
        '--capture-after',
        type=non_negative_int,
        default=1,
        help="CUDAGraphHook's capture_after (0: capture at a shape's first sighting)")
    parser.add_argument('--out', help='write the rows and every batch shape as json (atomically)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args()
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    base = batch_shapes(cfg, args.iters, args.seed)
    rows = [dict(pad="the config's preprocessor", **summarize(base, base, args.max_graphs, args.capture_after))]
    for d in args.size_divisors:
        summary = summarize(bucketed(base, d), base, args.max_graphs, args.capture_after)
        rows.append(dict(pad=f'on to {d} (BatchShapeBucketPad)', **summary))
    print(f'{args.iters} training batches of {args.config} (seed {args.seed})')
    print(f'| padded | shapes | at a new shape | at a shape seen once | replayed by {args.max_graphs} graphs | '
          'extra pixels |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["pad"]} | {r["shapes"]} | {r["first_sightings"]} | {r["second_sightings"]} | '
              f'{100 * r["replayed_share"]:.1f} % | {100 * r["extra_pixels"]:.1f} % |')
    if args.out:
        write_text_atomic(json.dumps(dict(rows=rows, shapes=base), indent=2) + '\n', args.out)


if __name__ == '__main__':
    main()

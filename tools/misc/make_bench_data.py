"""Write the COCO- and ADE20K-shaped timing data (:mod:`mavit_mm.bench_data`) under ROOT.

    python tools/misc/make_bench_data.py data/bench [--coco-train 400] [--coco-val 100] [--ade-train 100] \
        [--ade-val 100] [--seed 0]
    python tools/train.py configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py --amp --data-root data/bench/coco
"""
import argparse

from mavit_mm.bench_data import make_bench_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root')
    parser.add_argument('--coco-train', type=int, default=400)
    parser.add_argument('--coco-val', type=int, default=100)
    parser.add_argument('--ade-train', type=int, default=100)
    parser.add_argument('--ade-val', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    roots = make_bench_data(args.root, args.coco_train, args.coco_val, args.ade_train, args.ade_val, args.seed)
    for name, path in roots.items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()

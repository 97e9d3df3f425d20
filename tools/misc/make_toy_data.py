"""Write the toy shapes dataset (COCO instances, ADE20K and ImageNet-style layouts) used by the main job.

    python tools/misc/make_toy_data.py [ROOT=data/toy] [--num-train 160] [--num-val 40] [--size 128]
"""
import argparse

from mavit_mm.toy_data import make_toy_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', default='data/toy')
    parser.add_argument('--num-train', type=int, default=160)
    parser.add_argument('--num-val', type=int, default=40)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    roots = make_toy_dataset(args.root, args.num_train, args.num_val, args.size, args.seed)
    print(f"toy data ready: {roots['coco']} (COCO instances), {roots['ade']} (ADE20K layout), "
          f"{roots['cls']} (a folder per class)")


if __name__ == '__main__':
    main()

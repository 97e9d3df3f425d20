"""Check that the OpenMMLab stack and mavit_mm import, and print their versions.

Usage: python tools/misc/check_env.py [--quiet] [--root REPO]
Exits 1, naming what failed, when something is missing or at the wrong version.
"""
import argparse
import importlib
import os.path as osp
import sys

# (module, version it must have or None, why it matters)
EXPECTED = [
    ('torch', None, 'install torch first'),
    ('torchvision', None, 'mmpretrain.models needs it'),
    ('cv2', None, 'any OpenCV distribution (opencv-python, -headless, -contrib)'),
    ('mmengine', '0.10.7', 'the Runner and registries'),
    ('mmcv', '2.1.0', 'mmdet 3.3 / mmseg 1.2 require 2.0 <= mmcv < 2.2'),
    ('mmcv.ops', None, 'compiled ops; rebuild mmcv with tools/install.sh'),
    ('mmdet', '3.3.0', 'detection'),
    ('mmseg', '1.2.2', 'segmentation'),
    ('mmpretrain', '1.2.0', 'classification'),
    ('ptflops', None, 'FLOPs as the paper counts them (requirements.txt)'),
    ('modelindex', None, 'model zoo metafile checks (model-index in requirements.txt)'),
    ('mavit_mm', None, 'pip install -e . in the repository'),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quiet', action='store_true', help='print nothing, only set the exit code')
    parser.add_argument('--root', help='repository that mavit_mm must be imported from')
    args = parser.parse_args()

    problems, lines = [], []
    for name, version, why in EXPECTED:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - report any import failure
            problems.append(f'{name}: cannot import ({type(exc).__name__}: {exc}); {why}')
            continue
        found = getattr(module, '__version__', '')
        if version is not None and found != version:
            problems.append(f'{name}: found {found}, need {version}; {why}')
        if name == 'mmcv.ops':
            try:
                importlib.import_module('mmcv._ext')
            except ImportError as exc:
                problems.append(f'mmcv was built without its compiled ops ({exc}); {why}')
        lines.append(f'{name:<12} {found}  ({osp.dirname(module.__file__)})')
    if args.root and not problems:
        import mavit_mm
        here = osp.realpath(osp.dirname(mavit_mm.__file__))
        if not here.startswith(osp.realpath(args.root)):
            problems.append(f'mavit_mm is imported from {here}, not from {args.root}')
    if not args.quiet:
        print('\n'.join(lines))
        for p in problems:
            print('PROBLEM:', p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())

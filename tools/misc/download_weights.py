"""Download MAViT weights by model name, checked before they get their final name.

    python tools/misc/download_weights.py NAME [NAME ...] [--dir checkpoints] [--url URL] [--record-hash]
    python tools/misc/download_weights.py --all | --list

NAME is a model of model-index.yml (``mavit-t_8xb128_in1k``, ``mask-rcnn_mavit-t_fpn_1x_coco``, ...). The URL
is the metafile entry's ``Weights`` (or ``--url``). The file goes to ``DIR/<name>.pth`` (ImageNet weights:
``DIR/mavit-<a>_in1k.pth``, where the dense configs look), through ``.part`` (an interrupted download resumes),
and is renamed only once it is a complete torch checkpoint of the entry's MAViT arch whose SHA-256 matches
the one recorded (``--record-hash`` writes ``<file>.sha256`` after a first good download). Exits 1 with a
message that says what to do when a download fails.
"""
import argparse
import os.path as osp
import re
import sys
from typing import Dict, List, Optional

import yaml

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_models(index: str = osp.join(ROOT, 'model-index.yml')) -> Dict[str, dict]:
    """Every metafile entry of the model index, by name."""
    with open(index) as f:
        imports = yaml.safe_load(f)['Import']
    models = {}
    for meta in imports:
        with open(osp.join(osp.dirname(index), meta)) as f:
            for entry in yaml.safe_load(f).get('Models', []):
                models[entry['Name']] = entry
    return models


def expected_arch(name: str) -> Optional[str]:
    from mavit_mm import MAViT
    m = re.search(r'mavit-([tsbl])(?:_|$)', name)
    return next(a for a in MAViT.arch_zoo if len(a) > 1 and a[0] == m.group(1)) if m else None


def target_file(name: str, directory: str) -> str:
    m = re.fullmatch(r'mavit-([tsbl])_\d+xb\d+_in1k', name)
    return osp.join(directory, f'mavit-{m.group(1)}_in1k.pth' if m else f'{name}.pth')


def arch_check(arch: Optional[str]):
    """A check for :func:`mavit_mm.utils.download.download`: the file holds MAViT-``arch`` weights."""

    def check(path: str) -> None:
        import torch

        from mavit_mm import MAViT
        from mavit_mm.models.pretrained import describe_arch, extract_state_dict, guess_arch_name
        state = extract_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')} or state
        widths, depths = describe_arch(backbone)
        if not widths:
            raise ValueError('it holds no MAViT weights (no layers.*.blocks.*.pos keys)')
        if arch is not None:
            want = MAViT.arch_zoo[arch]
            if (want['embed_dims'], want['depths']) != (widths, depths):
                found = guess_arch_name(backbone, MAViT.arch_zoo)
                raise ValueError(f'it holds {"MAViT-" + found if found else "other"} weights (widths {widths}, '
                                 f'depths {depths}), not MAViT-{arch}\'s')

    return check


def fetch(name: str, entry: dict, args: argparse.Namespace) -> str:
    from mavit_mm.utils.download import download
    url = args.url or entry.get('Weights')
    if not url:
        raise SystemExit(f'download_weights: no Weights URL is recorded for {name} yet: pass the file\'s URL from the '
                         'release\'s model hub (https://huggingface.co/aldjalkdf/MAViT) with --url URL; see '
                         'docs/pretrained.md')
    dest = target_file(name, args.dir)
    sidecar = dest + '.sha256'
    sha = entry.get('SHA256')
    if not sha and osp.exists(sidecar):
        with open(sidecar) as f:
            sha = f.read().split()[0]
    if osp.exists(dest) and not args.force:
        print(f'{dest} is there already (--force to fetch it again)')
        return dest
    digest = download(url, dest, sha256=sha, check=arch_check(expected_arch(name)), progress=not args.quiet)
    if args.record_hash and not sha:
        from mavit_mm.utils.fileio import write_text_atomic
        write_text_atomic(f'{digest}  {osp.basename(dest)}\n', sidecar)
        print(f'recorded SHA-256 {digest} in {sidecar}')
    config = entry.get('Config')
    print(f'{name}: {dest} (SHA-256 {digest})')
    if re.fullmatch(r'mavit-[tsbl]_\d+xb\d+_in1k', name):
        print(f'  the dense configs of MAViT-{name[6]} read it as their ImageNet weights; classify with: '
              f'python tools/test.py {config} {dest} (after tools/model_converters/mavit_release_cls.py for '
              'the release\'s files)')
    elif config:
        print(f'  python tools/test.py {config} {dest}')
    return dest


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('names', nargs='*', help='model names of model-index.yml')
    parser.add_argument('--all', action='store_true', help='every model with a Weights URL')
    parser.add_argument('--list', action='store_true', help='list the models and whether a URL is recorded')
    parser.add_argument('--dir', default='checkpoints')
    parser.add_argument('--url', help='download this URL instead of the metafile\'s (one NAME)')
    parser.add_argument('--record-hash', action='store_true', help='write <file>.sha256 after a good download')
    parser.add_argument('--force', action='store_true', help='download again over an existing file')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if not (args.names or args.all or args.list):
        parser.error('name a model (--list shows them), or pass --all')
    if args.url and len(args.names) != 1:
        parser.error('--url goes with exactly one NAME')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    models = load_models()
    if args.list:
        for name, entry in models.items():
            print(f'{name:60s} {entry.get("Weights") or "(no URL recorded)"}')
        return 0
    names = [n for n, e in models.items() if e.get('Weights')] if args.all else args.names
    unknown = [n for n in names if n not in models]
    if unknown:
        sys.exit(f'download_weights: unknown model {unknown[0]!r}; --list shows the {len(models)} models')
    if args.all and not names:
        sys.exit('download_weights: no model has a Weights URL recorded yet; see docs/pretrained.md')
    from mavit_mm.utils.download import DownloadError
    failed = 0
    for name in names:
        try:
            fetch(name, models[name], args)
        except DownloadError as e:
            print(f'download_weights: {name}: {e}', file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

"""Export a MAViT backbone or segmentor to ONNX and check it against PyTorch with onnxruntime.

    python tools/deployment/pytorch2onnx.py configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py \
        work_dirs/upernet/iter_160000.pth --shape 512 512 --out upernet_mavit-t.onnx
    python tools/deployment/pytorch2onnx.py configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py \
        --backbone-only --dynamic --shape 512 512 --out mavit-t.onnx   # random weights: a graph to inspect

The graph takes the normalised image ``input (B, 3, H, W)`` and gives ``logits (B, classes, H, W)`` for a
segmentor, ``feat0..featK`` for the backbone (mavit_mm/deployment/onnx_export.py: opset, MALA's plain
PyTorch form, what is not in the graph). After writing, the tool runs the file in onnxruntime on a random
image (and, with --dynamic, on a second size) and prints the largest difference to PyTorch.
"""
import argparse
import copy
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mavit_mm.utils.cli_types import positive_int  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random, for a graph to inspect)')
    parser.add_argument('--shape', type=positive_int, nargs=2, required=True, metavar=('H', 'W'))
    parser.add_argument(
        '--dynamic', action='store_true', help='dynamic batch, height and width axes (with --backbone-only)')
    parser.add_argument('--backbone-only', action='store_true', help="export the config's MAViT backbone alone")
    parser.add_argument('--opset', type=positive_int, default=17)
    parser.add_argument('--out', help='the .onnx file (default: the config name)')
    parser.add_argument('--no-check', action='store_true', help='skip the onnxruntime comparison')
    return parser.parse_args()


def compare(path: str, module: torch.nn.Module, shape) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on a random image."""
    import onnxruntime as ort
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = module(x)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': x.numpy()})
    return max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))


def main() -> None:
    args = parse_args()
    from mavit_mm.config.run_config import build_model, load_model_config
    from mavit_mm.deployment import export_onnx, exportable_module
    from mavit_mm.utils.checkpoint_file import check_checkpoint_file
    try:
        cfg = load_model_config(args.config)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'pytorch2onnx: {e}')
    model = build_model(cfg)
    if args.checkpoint:
        if not osp.isfile(args.checkpoint):
            sys.exit(f'pytorch2onnx: checkpoint {args.checkpoint} does not exist')
        check_checkpoint_file(args.checkpoint)
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    if args.backbone_only:
        model = model.backbone
    try:
        # the PyTorch side of the comparison: the model as built, on its plain path
        reference, _ = exportable_module(copy.deepcopy(model), for_export=False)
    except TypeError as e:
        sys.exit(f'pytorch2onnx: {e}')
    out = args.out or osp.splitext(osp.basename(args.config))[0] + ('_backbone' if args.backbone_only else '') + '.onnx'
    try:
        info = export_onnx(model, out, args.shape, dynamic=args.dynamic, opset=args.opset)
    except ValueError as e:
        sys.exit(f'pytorch2onnx: {e}')
    print(f"wrote {out}: {info['kind']}, opset {info['opset']}, input {info['shape']}"
          f"{' (dynamic batch / height / width)' if args.dynamic else ''}, outputs {', '.join(info['outputs'])}")
    if not args.no_check:
        sizes = [tuple(args.shape)] + ([(args.shape[0] + 32, args.shape[1] + 64)] if args.dynamic else [])
        for size in sizes:
            print(f'onnxruntime vs PyTorch at {size[0]}x{size[1]}: max |diff| {compare(out, reference, size):.2e}')


if __name__ == '__main__':
    main()

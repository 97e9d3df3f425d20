"""Run a trained model on images and draw its predictions, with the OpenMMLab inferencers.

    python tools/misc/image_demo.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir outputs] [--device cpu]
                                    [--score-thr 0.3]

The config's ``default_scope`` picks the inferencer: mmdet's ``DetInferencer`` (boxes, masks),
mmseg's ``MMSegInferencer`` (class map) or mmpretrain's ``ImageClassificationInferencer`` (top class).
Drawings go to ``OUT_DIR/vis/``; a one-line summary per image is printed.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+', help='image files or a folder')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--device', default=None, help='cuda, cuda:N or cpu (default: cuda if available)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detections below it are not drawn')
    return parser.parse_args()


def build_inferencer(cfg, checkpoint: str, device: str):
    """The inferencer of the config's codebase, with ``cfg`` (an mmengine Config) and the weights."""
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        return DetInferencer(model=cfg, weights=checkpoint, device=device, show_progress=False)
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        return MMSegInferencer(model=cfg, weights=checkpoint, device=device)
    if scope == 'mmpretrain':
        from mmpretrain.apis import ImageClassificationInferencer

        import mavit_mm.classification  # noqa: F401  (keeps mmpretrain.models importable)
        return ImageClassificationInferencer(model=cfg, pretrained=checkpoint, device=device)
    raise ValueError(f"default_scope {scope!r}: this tool runs mmdet, mmseg and mmpretrain configs")


def summary(scope: str, prediction, score_thr: float) -> str:
    if scope == 'mmdet':
        kept = [s for s in prediction['scores'] if s >= score_thr]
        return f'{len(kept)} detections with score >= {score_thr} ({len(prediction["scores"])} in all)'
    if scope == 'mmseg':
        import numpy as np
        classes, counts = np.unique(prediction, return_counts=True)
        top = sorted(zip(counts.tolist(), classes.tolist()), reverse=True)[:3]
        return 'classes by area: ' + ', '.join(f'{c} ({n / prediction.size:.0%})' for n, c in top)
    return f'class {prediction["pred_label"]} ({prediction["pred_class"]}), score {prediction["pred_score"]:.3f}'


def main() -> int:
    args = parse_args()
    import torch

    import mavit_mm  # noqa: F401  (registers MAViT)
    from mavit_mm.config.run_config import load_model_config
    from mavit_mm.utils.checkpoint_file import check_checkpoint_file
    try:
        cfg = load_model_config(args.config)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'image_demo: {e}')
    if not osp.isfile(args.checkpoint):
        sys.exit(f'image_demo: checkpoint {args.checkpoint} does not exist '
                 '(tools/misc/download_weights.py fetches the released ones)')
    check_checkpoint_file(args.checkpoint)
    missing = [p for p in args.images if not osp.exists(p)]
    if missing:
        sys.exit(f'image_demo: no such image or folder: {", ".join(missing)}')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    inferencer = build_inferencer(cfg, args.checkpoint, device)
    scope = cfg.get('default_scope')
    images = args.images if len(args.images) > 1 else args.images[0]
    kwargs = {}
    if scope == 'mmdet':
        kwargs.update(out_dir=args.out_dir, no_save_pred=True, pred_score_thr=args.score_thr)
    elif scope == 'mmseg':
        kwargs.update(out_dir=args.out_dir)
    elif scope == 'mmpretrain':
        os.makedirs(osp.join(args.out_dir, 'vis'), exist_ok=True)
        kwargs['show_dir'] = osp.join(args.out_dir, 'vis')
    results = inferencer(images, **kwargs)
    predictions = results['predictions'] if isinstance(results, dict) else results
    if scope == 'mmseg' and not isinstance(predictions, list):
        predictions = [predictions]
    paths = args.images if len(args.images) > 1 else [args.images[0]] * len(predictions)
    for path, prediction in zip(paths, predictions):
        print(f'{path}: {summary(scope, prediction, args.score_thr)}')
    print(f'drawings in {osp.join(args.out_dir, "vis")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

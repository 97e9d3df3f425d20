"""COCO-2017- and ADE20K-shaped synthetic datasets at the real image sizes, for timing real runs.

What a training or test run costs depends on the sizes its batches have: COCO's keep-ratio resize to
1333 x 800 gives a new padded batch shape almost every iteration, ADE20K's test images come in many
sizes. These datasets reproduce that (mixed sizes and orientations drawn from COCO's and ADE20K's
common ones) with the real file layouts and class names, so the stock configs' pipelines, datasets
and evaluators run on them unchanged (``tools/train.py CONFIG --data-root ROOT/coco``):

- ``coco/``: ``train2017/``, ``val2017/``, ``annotations/instances_{train,val}2017.json``; 3-15
  polygon instances of COCO's 80 classes per image;
- ``ade/``: ``images/{training,validation}/*.jpg``, ``annotations/{training,validation}/*.png`` with
  labels 0 (ignored) to 150.

Written once per (sizes, seed) by ``tools/misc/make_bench_data.py``; the content is random shapes on
smooth colour noise: for timing, not for accuracy.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

# COCO 2017's most frequent sizes (width, height): the share of images drawn from this list; the rest
# have a long side of 640 and a short side anywhere in [240, 640]
COCO_COMMON_SIZES = ((640, 480), (640, 427), (480, 640), (640, 426), (640, 428), (427, 640), (640, 424), (500, 375),
                     (640, 360), (612, 612))
COCO_COMMON_SHARE = 0.6
COCO_NUM_CLASSES = 80
ADE_NUM_CLASSES = 150


def coco_size(rng: np.random.Generator) -> Tuple[int, int]:
    """(width, height) of one COCO-like image."""
    if rng.random() < COCO_COMMON_SHARE:
        return COCO_COMMON_SIZES[int(rng.integers(len(COCO_COMMON_SIZES)))]
    short = int(rng.integers(240, 641))
    return (640, short) if rng.random() < 0.75 else (short, 640)


def ade_size(rng: np.random.Generator) -> Tuple[int, int]:
    """(width, height) of one ADE20K-like image: mostly a short side of 512 and an aspect of 1 to 2."""
    short = 512 if rng.random() < 0.7 else int(rng.integers(256, 700))
    long = int(short * rng.uniform(1.0, 2.0))
    return (long, short) if rng.random() < 0.7 else (short, long)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    coarse = rng.uniform(30, 220, size=(8, 8, 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)


def _random_polygon(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A star-shaped polygon (K, 2) inside the image."""
    r = rng.uniform(0.04, 0.25) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    k = int(rng.integers(5, 13))
    t = np.sort(rng.uniform(0, 2 * np.pi, size=k))
    radii = r * rng.uniform(0.5, 1.0, size=k)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def _write_json(path: str, content: dict) -> None:
    with open(path + '.tmp', 'w') as f:
        json.dump(content, f)
    os.replace(path + '.tmp', path)


def _write_coco_split(root: str, split: str, count: int, rng: np.random.Generator, classes: List[str]) -> None:
    os.makedirs(osp.join(root, split), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        w, h = coco_size(rng)
        img = _background(rng, w, h)
        for _ in range(int(rng.integers(3, 16))):
            poly = _random_polygon(rng, w, h)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            ys, xs = np.nonzero(mask)
            if len(xs) < 16:
                continue
            img[mask.astype(bool)] = rng.integers(0, 256, size=3)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=int(rng.integers(COCO_NUM_CLASSES)) + 1,
                    iscrowd=0,
                    bbox=[
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() + 1 - xs.min()),
                        float(ys.max() + 1 - ys.min())
                    ],
                    area=float(len(xs)),
                    segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]]))
        name = f'{i + 1:012d}.jpg'
        cv2.imwrite(osp.join(root, split, name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append(dict(id=i + 1, file_name=name, width=w, height=h))
    categories = [dict(id=k + 1, name=name) for k, name in enumerate(classes)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    _write_json(
        osp.join(root, 'annotations', f'instances_{split}.json'),
        dict(images=images, annotations=annotations, categories=categories))


def _write_ade_split(root: str, split: str, count: int, rng: np.random.Generator) -> None:
    img_dir, ann_dir = osp.join(root, 'images', split), osp.join(root, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(count):
        w, h = ade_size(rng)
        img = _background(rng, w, h)
        labels = np.full((h, w), int(rng.integers(1, ADE_NUM_CLASSES + 1)), np.uint8)
        for _ in range(int(rng.integers(3, 12))):
            poly = np.round(_random_polygon(rng, w, h)).astype(np.int32)
            label = int(rng.integers(0, ADE_NUM_CLASSES + 1))
            cv2.fillPoly(labels, [poly], label)
            cv2.fillPoly(img, [poly], [int(c) for c in rng.integers(0, 256, size=3)])
        name = f'ADE_{split}_{i + 1:08d}'
        cv2.imwrite(osp.join(img_dir, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(osp.join(ann_dir, name + '.png'), labels)


def make_bench_data(root: str,
                    coco_train: int = 400,
                    coco_val: int = 100,
                    ade_train: int = 100,
                    ade_val: int = 100,
                    seed: int = 0) -> Dict[str, str]:
    """Write ``root/coco`` and ``root/ade`` unless already complete for these counts and seed.

    Returns:
        dict: ``{'coco': ..., 'ade': ...}`` roots, for ``tools/train.py --data-root``.
    """
    roots = dict(coco=osp.join(root, 'coco'), ade=osp.join(root, 'ade'))
    marker = osp.join(root, f'.complete-{coco_train}-{coco_val}-{ade_train}-{ade_val}-{seed}')
    if osp.exists(marker):
        return roots
    from mmdet.datasets import CocoDataset  # the stock configs' 80 class names
    rng = np.random.default_rng(seed)
    classes = list(CocoDataset.METAINFO['classes'])
    _write_coco_split(roots['coco'], 'train2017', coco_train, rng, classes)
    _write_coco_split(roots['coco'], 'val2017', coco_val, rng, classes)
    _write_ade_split(roots['ade'], 'training', ade_train, rng)
    _write_ade_split(roots['ade'], 'validation', ade_val, rng)
    open(marker, 'w').close()
    return roots

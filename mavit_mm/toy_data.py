"""A deterministic toy dataset of coloured shapes on textured backgrounds.

Written three times from the same images: in COCO instance format (boxes, polygon masks) for mmdet, in
ADE20K's semantic layout (images/ + annotations/ with one label PNG per image) for mmseg, and as an
ImageNet-style folder per class (the class of the largest shape) for mmpretrain, so the real pipelines,
datasets and evaluators run on it. Used by the README's main job and the tests.

    make_toy_dataset('data/toy', num_train=160, num_val=40, size=128, seed=0)
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
PALETTE = [(220, 20, 60), (0, 128, 255), (255, 200, 0)]
SPLITS = {'train': 'training', 'val': 'validation'}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour noise plus stripes: texture the shapes must be told apart from."""
    coarse = rng.uniform(40, 200, size=(6, 6, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    stripes = 25 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    img += stripes[..., None] + rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    """Vertices (K, 2) of a shape of radius r centred at (cx, cy)."""
    n = {'circle': 32, 'square': 4, 'triangle': 3}[kind]
    t = rot + np.arange(n) * 2 * np.pi / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _sample_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[dict]]:
    img = _background(rng, size)
    objects: List[dict] = []
    occupied = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            label = int(rng.integers(len(CLASSES)))
            r = rng.uniform(0.1, 0.22) * size
            cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
            poly = _polygon(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * np.pi))
            mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            if mask.sum() > 30 and not (occupied & mask.astype(bool)).any():
                break
        else:
            continue
        occupied |= mask.astype(bool)
        colour = np.clip(np.array(PALETTE[label]) + rng.integers(-40, 41, size=3), 0, 255)
        img[mask.astype(bool)] = colour[::-1]  # BGR for cv2
        objects.append(dict(label=label, polygon=poly, mask=mask))
    return img, objects


def _coco_annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    ys, xs = np.nonzero(obj['mask'])
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=obj['label'] + 1,
        iscrowd=0,
        bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        area=float(obj['mask'].sum()),
        segmentation=[[round(float(v), 2) for v in obj['polygon'].reshape(-1)]])


def make_toy_dataset(root: str,
                     num_train: int = 160,
                     num_val: int = 40,
                     size: int = 128,
                     seed: int = 0) -> Dict[str, str]:
    """Write the toy data under ``root`` (``coco/``, ``ade/``, ``cls/``) unless it is already complete.

    Returns:
        dict: ``{'coco': ..., 'ade': ..., 'cls': ...}`` roots.
    """
    coco_root, ade_root, cls_root = osp.join(root, 'coco'), osp.join(root, 'ade'), osp.join(root, 'cls')
    roots = dict(coco=coco_root, ade=ade_root, cls=cls_root)
    done_marker = osp.join(root, f'.complete-v2-{num_train}-{num_val}-{size}-{seed}')
    if osp.exists(done_marker):
        return roots
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    for split, count in (('train', num_train), ('val', num_val)):
        ade_split = SPLITS[split]
        for d in (osp.join(coco_root, split), osp.join(coco_root,
                                                       'annotations'), osp.join(ade_root, 'images', ade_split),
                  osp.join(ade_root, 'annotations', ade_split), *(osp.join(cls_root, split, name) for name in CLASSES)):
            os.makedirs(d, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            img, objects = _sample_image(rng, size)
            name = f'{split}_{i:05d}'
            cv2.imwrite(osp.join(coco_root, split, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ade_root, 'images', ade_split, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            label_map = np.zeros((size, size), np.uint8)
            for obj in objects:
                label_map[obj['mask'].astype(bool)] = obj['label'] + 1
                annotations.append(_coco_annotation(obj, len(annotations) + 1, i + 1))
            cv2.imwrite(osp.join(ade_root, 'annotations', ade_split, name + '.png'), label_map)
            if objects:
                largest = max(objects, key=lambda o: int(o['mask'].sum()))
                cv2.imwrite(
                    osp.join(cls_root, split, CLASSES[largest['label']], name + '.jpg'), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=i + 1, file_name=name + '.jpg', height=size, width=size))
        ann_path = osp.join(coco_root, 'annotations', f'instances_{split}.json')
        with open(ann_path + '.tmp', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        os.replace(ann_path + '.tmp', ann_path)
    open(done_marker, 'w').close()
    return roots

"""The paper's figures (ICCV 2025, Tables 2-5), keyed by the name of the config that reproduces each row.

Used by the model zoo page, the metafiles and ``tools/analysis_tools/collect_results.py``. Params in M,
FLOPs in G (module operations only, see :mod:`mavit_mm.analysis.complexity`), metrics in %.
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper for one config.

    Args:
        folder (str): Config folder under ``configs/``.
        task (str): OpenMMLab metafile task name.
        dataset (str): Metafile dataset name.
        table (str): Where the row is in the paper.
        schedule (str): Training schedule as the metafile states it.
        params (float): Params, M.
        flops (float): FLOPs, G, at the paper's input shape.
        metrics (dict): Metafile metric name -> value (%).
    """
    folder: str
    task: str
    dataset: str
    table: str
    schedule: str
    params: float
    flops: float
    metrics: Dict[str, float] = field(default_factory=dict)


def _rows() -> Dict[str, PaperRow]:
    rows: Dict[str, PaperRow] = {}
    in1k = {'t': (16, 2.5, 82.9), 's': (27, 4.6, 84.7), 'b': (50, 9.9, 85.7), 'l': (98, 16.1, 86.0)}
    for a, (p, f, top1) in in1k.items():
        rows[f'mavit-{a}_8xb128_in1k'] = PaperRow('imagenet', 'Image Classification', 'ImageNet-1k', 'Table 2',
                                                  '300 epochs', p, f, {'Top 1 Accuracy': top1})

    def det(box: Tuple[float, ...], mask: Tuple[float, ...] = ()) -> Dict[str, float]:
        names = ('box AP', 'box AP@50', 'box AP@75', 'box AP_s', 'box AP_m', 'box AP_l')
        out = dict(zip(names, box))
        out.update(zip(('mask AP', 'mask AP@50', 'mask AP@75'), mask))
        return out

    mrcnn_1x = {
        't': (33, 219, (47.6, 69.5, 52.5), (42.9, 66.5, 46.4)),
        's': (44, 262, (50.2, 71.7, 55.3), (44.7, 68.7, 47.9)),
        'b': (67, 372, (51.7, 73.3, 57.0), (46.1, 70.6, 50.1)),
        'l': (114, 501, (52.5, 73.6, 57.8), (46.5, 71.0, 50.6))
    }
    for a, (p, f, box, mask) in mrcnn_1x.items():
        rows[f'mask-rcnn_mavit-{a}_fpn_1x_coco'] = PaperRow('mask_rcnn', 'Instance Segmentation', 'COCO', 'Table 4',
                                                            '1x (12 epochs)', p, f, det(box, mask))
    retina = {
        't': (24, 201, (45.6, 66.7, 48.9, 28.9, 49.7, 61.1)),
        's': (34, 244, (48.3, 69.4, 52.2, 31.8, 52.6, 64.0)),
        'b': (57, 353, (49.9, 71.1, 53.8, 33.7, 54.5, 65.5)),
        'l': (104, 482, (50.6, 71.7, 54.9, 34.1, 55.3, 65.6))
    }
    for a, (p, f, box) in retina.items():
        rows[f'retinanet_mavit-{a}_fpn_1x_coco'] = PaperRow('retinanet', 'Object Detection', 'COCO', 'Table 4',
                                                            '1x (12 epochs)', p, f, det(box))
    mrcnn_3x = {
        's': (44, 262, (51.4, 72.6, 56.2), (45.5, 69.8, 49.2)),
        'b': (67, 372, (53.2, 74.1, 58.5), (47.0, 71.5, 51.1)),
        'l': (114, 501, (53.6, 74.3, 58.7), (47.2, 71.5, 51.4))
    }
    for a, (p, f, box, mask) in mrcnn_3x.items():
        rows[f'mask-rcnn_mavit-{a}_fpn_ms-crop-3x_coco'] = PaperRow('mask_rcnn', 'Instance Segmentation', 'COCO',
                                                                    'Table 3', '3x (36 epochs) + MS', p, f,
                                                                    det(box, mask))
    cascade = {
        's': (82, 741, (54.2, 72.6, 58.6), (47.0, 70.5, 51.1)),
        'b': (105, 851, (55.5, 74.0, 60.4), (48.0, 71.7, 52.5)),
        'l': (152, 979, (56.0, 74.6, 60.9), (48.4, 72.4, 52.9))
    }
    for a, (p, f, box, mask) in cascade.items():
        rows[f'cascade-mask-rcnn_mavit-{a}_fpn_4conv1fc-giou_ms-crop-3x_coco'] = PaperRow(
            'cascade_rcnn', 'Instance Segmentation', 'COCO', 'Table 3', '3x (36 epochs) + MS', p, f, det(box, mask))
    fpn = {'t': (18, 136, 47.6), 's': (28, 180, 50.7), 'b': (51, 292, 51.5), 'l': (98, 424, 52.8)}
    for a, (p, f, miou) in fpn.items():
        rows[f'fpn_mavit-{a}_8xb2-80k_ade20k-512x512'] = PaperRow('sem_fpn', 'Semantic Segmentation', 'ADE20K',
                                                                  'Table 5', '80k iterations', p, f, {'mIoU': miou})
    uper = {'t': (44, 893, 48.4), 's': (55, 937, 51.0), 'b': (77, 1050, 52.8), 'l': (125, 1182, 53.6)}
    for a, (p, f, miou) in uper.items():
        gpus = '8xb1' if a == 'l' else '8xb2'
        rows[f'upernet_mavit-{a}_{gpus}-160k_ade20k-512x512'] = PaperRow('upernet', 'Semantic Segmentation', 'ADE20K',
                                                                         'Table 5', '160k iterations', p, f,
                                                                         {'mIoU': miou})
    return rows


#: Config name (file stem) -> the paper's row.
PAPER_ROWS: Dict[str, PaperRow] = _rows()

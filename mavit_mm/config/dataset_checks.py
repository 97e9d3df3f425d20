"""Dataset mistakes named before (or, for large files, when) the Runner meets them.

Two common mistakes end deep inside mmengine with messages that name neither the file nor the fix:
an annotation file cut short (``json.decoder.JSONDecodeError: Unterminated string ...``) and a
COCO-format dataset whose category names match none of the config's classes (``ValueError: need at
least one array to concatenate``, every image filtered out). :func:`check_annotations` finds both
before the Runner starts: every JSON's ends are checked (a truncated download), and JSONs up to
``full_check_bytes`` are parsed and their categories compared with the config's classes; larger ones
(COCO's 450 MB) are diagnosed by :func:`explain_dataset_errors` only if building the dataset fails,
so a correct run never parses them twice.
"""
import contextlib
import json
import os
import os.path as osp
from typing import Iterator, List, Optional, Sequence

from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope

from ..utils.config_walk import SPLITS, iter_datasets

FULL_CHECK_BYTES = 64 * 2**20
EVALUATORS = {'val': 'val_evaluator', 'test': 'test_evaluator'}


class DatasetError(ValueError):
    """A dataset the run cannot use; the message names the file, the problem and the fix."""


def _leaves(cfg: Config, splits: Sequence[str]) -> Iterator[ConfigDict]:
    for split in splits:
        loader = cfg.get(SPLITS[split])
        if loader:
            yield from iter_datasets(loader['dataset'])


def _ann_path(ds: ConfigDict) -> Optional[str]:
    ann = ds.get('ann_file')
    if not isinstance(ann, str) or not ann:
        return None
    path = osp.join(ds.get('data_root') or '', ann)
    return path if osp.isfile(path) else None


def _ends(path: str, n: int = 64) -> bytes:
    with open(path, 'rb') as f:
        head = f.read(n)
        f.seek(max(0, os.path.getsize(path) - n))
        return head.lstrip()[:1] + f.read().rstrip()[-1:]


def check_json_file(path: str, parse: bool) -> Optional[dict]:
    """Raise :class:`DatasetError` naming ``path`` when it is empty, truncated or (``parse``) not JSON;
    returns the parsed content when ``parse``."""
    size = osp.getsize(path)
    fix = 'download or export it again (an interrupted download leaves a file cut short)'
    if size == 0:
        raise DatasetError(f'annotation file {path} is empty: {fix}')
    ends = _ends(path)
    if ends not in (b'{}', b'[]'):
        raise DatasetError(f'annotation file {path} ({size:,} bytes) is not complete JSON: it starts with '
                           f'{ends[:1]!r} and ends with {ends[1:]!r} where a JSON object or list closes; {fix}')
    if not parse:
        return None
    try:
        with open(path, 'rb') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f' (line {e.lineno}, column {e.colno})' if isinstance(e, json.JSONDecodeError) else ''
        raise DatasetError(f'annotation file {path} ({size:,} bytes) is not valid JSON{where}: {e}; {fix}') from e


def _classes(ds: ConfigDict, scope: str) -> Optional[List[str]]:
    """The classes a dataset config trains on: its ``metainfo.classes``, else its class's default."""
    meta = ds.get('metainfo') or {}
    if meta.get('classes'):
        return list(meta['classes'])
    import importlib
    try:
        with DefaultScope.overwrite_default_scope(scope):
            cls = importlib.import_module(f'{scope}.registry').DATASETS.get(ds.get('type'))
    except Exception:  # noqa: BLE001  (an unknown scope or type: nothing to compare with)
        return None
    return list(cls.METAINFO.get('classes', ())) if cls is not None and hasattr(cls, 'METAINFO') else None


def _preview(names: Sequence[str], n: int = 5) -> str:
    shown = ', '.join(repr(x) for x in list(names)[:n])
    return f'{shown}, ... ({len(names)} in all)' if len(names) > n else shown


def check_coco_content(path: str, content: dict, ds: ConfigDict, scope: str) -> None:
    """Raise :class:`DatasetError` when a COCO-format dataset would be empty after mmdet's filtering:
    no category name in common with the config's classes, or every image dropped by ``filter_cfg``."""
    if not isinstance(content, dict) or 'categories' not in content:
        return
    names = [c.get('name') for c in content['categories']]
    classes = _classes(ds, scope)
    if not classes:
        return
    common = set(names) & set(classes)
    if not common:
        raise DatasetError(
            f'annotation file {path}: none of its category names ({_preview(names)}) is one of the '
            f"config's classes ({_preview(classes)}), so every annotation would be dropped and the dataset "
            f'be empty. For your own classes set metainfo=dict(classes=({_preview(names, 3)})) in every '
            "dataset of the config (train, val, test) and the heads' num_classes to their number.")
    filter_cfg = ds.get('filter_cfg')
    if ds.get('test_mode') or not filter_cfg:
        return
    # mmdet's CocoDataset.filter_data: images without an annotation of the classes go when
    # filter_empty_gt, and images whose shorter side is under min_size go always
    ids = {c['id'] for c in content['categories'] if c.get('name') in common}
    with_classes = {a['image_id'] for a in content.get('annotations', []) if a.get('category_id') in ids}
    empty_gt, min_size = filter_cfg.get('filter_empty_gt', False), filter_cfg.get('min_size', 0)
    kept = [
        im for im in content.get('images', [])
        if (not empty_gt or im['id'] in with_classes) and min(im.get('width', 0), im.get('height', 0)) >= min_size
    ]
    if content.get('images') and not kept:
        raise DatasetError(
            f'annotation file {path}: every one of its {len(content["images"])} images is filtered out by '
            f'filter_cfg={dict(filter_cfg)} ({len(with_classes)} have an annotation of the config\'s classes; '
            f'images whose shorter side is under min_size={min_size} px are dropped too). Lower '
            'filter_cfg.min_size, set filter_cfg.filter_empty_gt=False, or check that the annotations use the '
            'classes in metainfo.')


def check_text_list(path: str) -> None:
    """Raise :class:`DatasetError` when an image list (``ann_file`` as text) is empty or not UTF-8."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = [line for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise DatasetError(f'image list {path} is not UTF-8 text ({e}): write it as one file name '
                           '(and label) per line') from e
    if not lines:
        raise DatasetError(f'image list {path} names no image: write one file name (and label) per line')


def check_annotations(cfg: Config, splits: Sequence[str], full_check_bytes: int = FULL_CHECK_BYTES) -> None:
    """Check the annotation files of ``splits``' datasets before the Runner loads them (see the module
    docstring). Raises :class:`DatasetError`."""
    scope = cfg.get('default_scope', 'mmengine')
    for key in (EVALUATORS[s] for s in splits if s in EVALUATORS):
        evaluators = cfg.get(key) or []
        for ev in evaluators if isinstance(evaluators, list) else [evaluators]:
            ann = ev.get('ann_file')
            if isinstance(ann, str) and ann.endswith('.json') and osp.isfile(ann):
                check_json_file(ann, parse=osp.getsize(ann) <= full_check_bytes)
    for ds in _leaves(cfg, splits):
        path = _ann_path(ds)
        if path is None:
            continue
        if path.endswith('.json'):
            small = osp.getsize(path) <= full_check_bytes
            content = check_json_file(path, parse=small)
            if small and scope == 'mmdet':
                check_coco_content(path, content, ds, scope)
        elif path.endswith('.txt'):
            check_text_list(path)


@contextlib.contextmanager
def explain_dataset_errors(cfg: Config, splits: Sequence[str]) -> Iterator[None]:
    """Re-raise a JSON error or an empty dataset met while the Runner builds ``splits``' datasets as a
    :class:`DatasetError` naming the file and the fix (the large files :func:`check_annotations` did not
    parse up front are parsed now, on the failure path only)."""
    try:
        yield
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        unreadable = isinstance(e, (json.JSONDecodeError, UnicodeDecodeError))
        if isinstance(e, DatasetError) or not (unreadable or 'need at least one array to concatenate' in str(e)):
            raise
        try:
            check_annotations(cfg, splits, full_check_bytes=2**62)
        except DatasetError as found:
            raise found from e
        raise

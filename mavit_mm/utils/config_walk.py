"""Walks over a loaded config's tree of dicts and lists: the one walker every config reader and editor uses."""
from typing import Any, Dict, Iterator, Mapping

#: The tools' split names and the config keys of their dataloaders.
SPLITS = {'train': 'train_dataloader', 'val': 'val_dataloader', 'test': 'test_dataloader'}


def iter_dicts(node: Any) -> Iterator[Dict[str, Any]]:
    """Yield every dict of a config tree (``node`` itself first, then depth-first through dict values and
    list / tuple items). Editing the values of a yielded dict is safe; adding or removing keys is not."""
    if isinstance(node, dict):
        yield node
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return
    for child in children:
        yield from iter_dicts(child)


def used_types(node: Any) -> Iterator[str]:
    """Yield the ``type`` strings of every dict under ``node`` (``'mmdet.X'`` as written)."""
    for d in iter_dicts(node):
        if isinstance(d.get('type'), str):
            yield d['type']


def replace_types(node: Any, mapping: Mapping[str, str]) -> int:
    """Rewrite ``type`` values under ``node`` in place by their name (``'mmdet.X'`` keeps its scope);
    returns how many were rewritten."""
    count = 0
    for d in iter_dicts(node):
        t = d.get('type')
        if not isinstance(t, str):
            continue
        scope, _, name = t.rpartition('.')
        if name in mapping:
            d['type'] = f'{scope}.{mapping[name]}' if scope else mapping[name]
            count += 1
    return count


def iter_datasets(dataset_cfg: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Yield the leaf dataset configs of a dataset config, through ``dataset=`` / ``datasets=`` wrappers
    (RepeatDataset, ConcatDataset, ...)."""
    if 'datasets' in dataset_cfg:
        for d in dataset_cfg['datasets']:
            yield from iter_datasets(d)
    elif 'dataset' in dataset_cfg:
        yield from iter_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg

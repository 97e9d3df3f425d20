"""Dataset mistakes get errors that name the file, the problem and the fix: up front (check_datasets),
through the Runner's own dataset build (explain_dataset_errors) and through tools/train.py."""
import json
import os.path as osp
import shutil
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mavit_mm.config.dataset_checks import DatasetError, check_annotations, explain_dataset_errors
from mavit_mm.config.run_config import check_datasets, set_data_root
from mavit_mm.toy_data import make_toy_dataset
from helpers import ROOT

TOY_MASK_RCNN = osp.join(ROOT, 'configs/toy/mask-rcnn_mavit-t_fpn_toy.py')


@pytest.fixture
def toy(tmp_path):
    """A private copy of the toy COCO data and the toy Mask R-CNN config pointing at it."""
    roots = make_toy_dataset(str(tmp_path / 'toy'), num_train=6, num_val=3, size=64)
    cfg = Config.fromfile(TOY_MASK_RCNN)
    set_data_root(cfg, roots['coco'])
    return cfg, osp.join(roots['coco'], 'annotations', 'instances_train.json')


def _edit_json(path, fn):
    with open(path) as f:
        content = json.load(f)
    fn(content)
    with open(path, 'w') as f:
        json.dump(content, f)


def test_a_correct_dataset_passes(toy):
    cfg, _ = toy
    check_datasets(cfg, ['train', 'val'])


def test_a_truncated_annotation_file_is_named(toy):
    cfg, path = toy
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])  # an interrupted download
    for full_check_bytes in (2**30, 0):  # parsed up front, or only its ends checked (a large file)
        with pytest.raises(DatasetError, match=f'{path}.*is not complete JSON.*download or export it again'):
            check_annotations(cfg, ['train'], full_check_bytes=full_check_bytes)


def test_a_corrupt_annotation_file_is_named_with_the_position(toy):
    cfg, path = toy
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write(text.replace('"images"', '"images" "oops"', 1))
    with pytest.raises(DatasetError, match=r'is not valid JSON \(line 1, column \d+\)'):
        check_datasets(cfg, ['train'])


def test_an_empty_annotation_file_is_named(toy):
    cfg, path = toy
    open(path, 'w').close()
    with pytest.raises(DatasetError, match=f'annotation file {path} is empty'):
        check_datasets(cfg, ['train'])


def test_categories_unknown_to_the_config_are_listed_with_the_fix(toy):
    cfg, path = toy
    _edit_json(path, lambda c: [cat.update(name=f'part_{cat["id"]}') for cat in c['categories']])
    with pytest.raises(DatasetError) as info:
        check_datasets(cfg, ['train'])
    message = str(info.value)
    assert "'part_1', 'part_2', 'part_3'" in message  # the file's names
    assert "'circle', 'square', 'triangle'" in message  # the config's classes
    assert 'metainfo=dict(classes=(' in message and 'num_classes' in message


def test_a_custom_dataset_without_metainfo_gets_the_fix(toy):
    """The case a new user meets: a COCO-format dataset of their own classes in a config without metainfo:
    mmdet's CocoDataset then expects COCO's 80 classes."""
    cfg, _ = toy
    cfg.train_dataloader.dataset.pop('metainfo')
    with pytest.raises(DatasetError, match=r"config's classes \('person', 'bicycle', 'car'.*\(80 in all\)"):
        check_datasets(cfg, ['train'])


def test_every_image_filtered_out_is_explained(toy):
    cfg, _ = toy
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True, min_size=500)  # toy images: 64 px
    with pytest.raises(
            DatasetError, match=r"every one of its 6 images is filtered out by filter_cfg=.*'min_size': 500"):
        check_datasets(cfg, ['train'])


def test_the_runner_s_own_error_is_explained_for_large_files(toy):
    """Above the up-front parse size the mismatch surfaces where mmengine meets it (an empty dataset);
    explain_dataset_errors diagnoses it then and raises the clear error from the original."""
    cfg, path = toy
    _edit_json(path, lambda c: [cat.update(name=f'part_{cat["id"]}') for cat in c['categories']])
    check_annotations(cfg, ['train'], full_check_bytes=0)  # only the ends: they are fine
    from mmdet.registry import DATASETS

    import mavit_mm  # noqa: F401  (the config's custom import)
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(DatasetError, match='none of its category names') as info:
            with explain_dataset_errors(cfg, ['train']):
                DATASETS.build(cfg.train_dataloader.dataset)
    assert 'need at least one array to concatenate' in str(info.value.__cause__)


def test_other_errors_pass_through_unchanged(toy):
    cfg, _ = toy
    with pytest.raises(ValueError, match='^unrelated$'):
        with explain_dataset_errors(cfg, ['train']):
            raise ValueError('unrelated')


def test_train_py_names_a_truncated_file(tmp_path):
    roots = make_toy_dataset(str(tmp_path / 'toy'), num_train=6, num_val=3, size=64)
    path = osp.join(roots['coco'], 'annotations', 'instances_train.json')
    shutil.copy(path, path + '.orig')
    with open(path + '.orig', 'rb') as src, open(path, 'wb') as dst:
        dst.write(src.read()[:300])
    proc = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools/train.py'), TOY_MASK_RCNN, '--data-root', roots['coco'], '--work-dir',
        str(tmp_path / 'work')
    ],
                          capture_output=True,
                          text=True,
                          cwd=ROOT)
    assert proc.returncode != 0
    assert f'DatasetError: annotation file {path} (300 bytes) is not complete JSON' in proc.stderr

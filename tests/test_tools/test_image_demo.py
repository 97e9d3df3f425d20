"""tools/misc/image_demo.py: a checkpoint of the toy Mask R-CNN and of the toy UperNet run on a toy image through
mmdet's DetInferencer / mmseg's MMSegInferencer, a drawing per image is written, and the printed summary is
what the model predicts; bad paths are refused with the fix."""
import os.path as osp

import cv2
import pytest
import torch

from mavit_mm.config.run_config import build_model, load_model_config
from mavit_mm.toy_data import make_toy_dataset
from helpers import ROOT, call_tool

DET = osp.join(ROOT, 'configs/toy/mask-rcnn_mavit-t_fpn_toy.py')
SEG = osp.join(ROOT, 'configs/toy/upernet_mavit-t_toy.py')


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    make_toy_dataset(str(root / 'toy'), num_train=2, num_val=2, size=96, seed=1)
    return root


def checkpoint(config: str, path) -> torch.nn.Module:
    model = build_model(load_model_config(config)).eval()
    torch.save({'state_dict': model.state_dict()}, path)
    return model


def test_detector_demo_draws_and_reports_the_models_detections(toy, capsys):
    model = checkpoint(DET, toy / 'det.pth')
    image = toy / 'toy/coco/val/val_00000.jpg'
    out = toy / 'out_det'
    assert call_tool('tools/misc/image_demo.py', DET, str(toy / 'det.pth'), str(image), '--out-dir', str(out),
                     '--score-thr', '0.1', '--device', 'cpu') == 0
    printed = capsys.readouterr().out
    drawing = cv2.imread(str(out / 'vis/val_00000.jpg'))
    assert drawing is not None and drawing.shape == cv2.imread(str(image)).shape
    # the same model through mmdet's own test pipeline: the count the tool reports
    from mmdet.apis import inference_detector
    from mmengine.config import Config
    model.cfg = Config.fromfile(DET)
    scores = inference_detector(model, str(image)).pred_instances.scores
    assert f'{int((scores >= 0.1).sum())} detections with score >= 0.1 ({len(scores)} in all)' in printed


def test_segmentor_demo_draws_a_class_map(toy, capsys):
    checkpoint(SEG, toy / 'seg.pth')
    image = toy / 'toy/ade/images/validation/val_00000.jpg'
    out = toy / 'out_seg'
    assert call_tool('tools/misc/image_demo.py', SEG, str(toy / 'seg.pth'), str(image), '--out-dir', str(out),
                     '--device', 'cpu') == 0
    assert 'classes by area:' in capsys.readouterr().out
    assert cv2.imread(str(out / 'vis/val_00000.jpg')) is not None


def test_missing_checkpoint_and_image_are_named(toy, capsys):
    assert call_tool('tools/misc/image_demo.py', DET, str(toy / 'nope.pth'), 'x.jpg') != 0
    assert 'nope.pth does not exist' in capsys.readouterr().err
    checkpoint(DET, toy / 'det2.pth')
    assert call_tool('tools/misc/image_demo.py', DET, str(toy / 'det2.pth'), str(toy / 'missing.jpg')) != 0
    assert 'no such image or folder' in capsys.readouterr().err

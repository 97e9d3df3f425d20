"""ONNX export (tools/deployment/pytorch2onnx.py, mavit_mm/deployment): onnxruntime, run in a process that never
imports torch, gives PyTorch's outputs for the MAViT-T backbone at two sizes of one dynamic graph, for a toy
UperNet (logits at the input size) and for RetinaNet and the toy Mask R-CNN (detections with NMS in the graph,
which first equal mmdet's own ``predict``); the exact rewrite of adaptive pooling; what cannot be exported is
refused."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mavit_mm import MAViT
from mavit_mm.deployment import export_onnx, exportable_module
from mavit_mm.deployment.onnx_export import MatmulAdaptiveAvgPool2d
from helpers import ROOT, call_tool

pytest.importorskip('onnxruntime')

# onnxruntime alone: inputs and outputs as .npy files, and proof that torch was never imported
RUN_ORT = '''
import json, sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
outs = session.run(None, {"input": np.load(sys.argv[2])})
for i, o in enumerate(outs):
    np.save(f"{sys.argv[3]}_{i}.npy", o)
print(json.dumps({"torch_imported": "torch" in sys.modules, "outputs": len(outs)}))
'''


def onnxruntime_outputs(path, x: torch.Tensor, tmp_path, tag: str):
    np.save(tmp_path / f'{tag}_in.npy', x.numpy())
    proc = subprocess.run(
        [sys.executable, '-c', RUN_ORT,
         str(path),
         str(tmp_path / f'{tag}_in.npy'),
         str(tmp_path / f'{tag}_out')],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info['torch_imported'] is False
    return [np.load(tmp_path / f'{tag}_out_{i}.npy') for i in range(info['outputs'])]


def assert_close(got, ref):
    """Tolerance: fp32 graphs from two runtimes: 1e-4 of the output's largest magnitude, plus 1e-5."""
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        r = r.numpy()
        assert g.shape == r.shape
        assert np.abs(g - r).max() <= 1e-4 * np.abs(r).max() + 1e-5


@pytest.mark.parametrize('n,s', [((7, 5), (1, 2, 3, 6)), ((16, 64), (1, 2, 3, 6)), ((6, 6), (1, 2, 3, 6))])
def test_matmul_adaptive_pool_is_pytorchs(n, s):
    x = torch.randn(2, 3, *n, dtype=torch.float64)
    for size in s:
        torch.testing.assert_close(MatmulAdaptiveAvgPool2d(size)(x), nn.AdaptiveAvgPool2d(size)(x))


def test_backbone_dynamic_export_matches_pytorch_at_two_sizes(tmp_path):
    model = MAViT(arch='tiny').eval()
    info = export_onnx(model, str(tmp_path / 'mavit-t.onnx'), (64, 96), dynamic=True)
    assert info['outputs'] == ['feat0', 'feat1', 'feat2', 'feat3'] and info['opset'] == 17
    for tag, shape in (('a', (1, 3, 64, 96)), ('b', (2, 3, 96, 160))):
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)
        assert_close(onnxruntime_outputs(tmp_path / 'mavit-t.onnx', x, tmp_path, tag), ref)


def test_segmentor_export_gives_logits_at_the_input_size(tmp_path, capsys):
    out = tmp_path / 'upernet.onnx'
    assert call_tool('tools/deployment/pytorch2onnx.py', 'configs/toy/upernet_mavit-t_toy.py', '--shape', '64', '96',
                     '--out', str(out)) == 0
    printed = capsys.readouterr().out
    assert 'segmentor, opset 17' in printed and 'max |diff|' in printed
    from mavit_mm.config.run_config import build_model, load_model_config
    model = build_model(load_model_config('configs/toy/upernet_mavit-t_toy.py'))
    reference, kind = exportable_module(copy.deepcopy(model), for_export=False)  # its own adaptive pooling
    export_onnx(model, str(out), (64, 96))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = reference(x)
    assert kind == 'segmentor' and ref.shape == (1, 4, 64, 96)
    assert_close(onnxruntime_outputs(out, x, tmp_path, 'seg'), [ref])


def test_what_cannot_be_exported_is_refused(tmp_path, capsys):
    assert call_tool('tools/deployment/pytorch2onnx.py', 'configs/toy/upernet_mavit-t_toy.py', '--shape', '64', '64',
                     '--dynamic', '--out', str(tmp_path / 'x.onnx')) != 0
    assert 'dynamic axes are supported for the backbone only' in capsys.readouterr().err
    assert call_tool('tools/deployment/pytorch2onnx.py', 'configs/toy/mask-rcnn_mavit-t_fpn_toy.py', '--shape', '64',
                     '64', '--dynamic', '--out', str(tmp_path / 'y.onnx')) != 0
    assert 'export a detector once per input size' in capsys.readouterr().err
    cascade = 'configs/cascade_rcnn/cascade-mask-rcnn_mavit-s_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
    assert call_tool('tools/deployment/pytorch2onnx.py', cascade, '--shape', '64', '64', '--out',
                     str(tmp_path / 'z.onnx')) != 0
    assert 'cascades are not supported' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    from mavit_mm.deployment.detectors import detector_export_module

    class FCOSHead(nn.Module):  # a dense head whose scores need its centerness branch too
        use_sigmoid_cls = True

    detector = nn.Module()
    detector.bbox_head = FCOSHead()
    with pytest.raises(TypeError, match='FCOSHead: only RetinaNet heads'):
        detector_export_module(detector)


def mmdet_predictions(model, x: torch.Tensor):
    """mmdet's own inference on one normalised image, boxes in its pixel coordinates (rescale=False)."""
    from mmdet.structures import DetDataSample
    h, w = x.shape[-2:]
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), pad_shape=(h, w), batch_input_shape=(h, w)))
    with torch.no_grad():
        return model.predict(x, [sample], rescale=False)[0].pred_instances


def assert_same_detections(got, ref, masks_thr=None):
    """Two sets of detections: same count and labels, boxes within 1e-3 px + 1e-4 relative, scores within
    1e-4; masks (probabilities, thresholded at ``masks_thr``) differ on at most 0.1 % of the pixels."""
    boxes, scores, labels = (np.asarray(t) for t in got[:3])
    assert boxes.shape[0] == len(ref['labels']) > 0
    np.testing.assert_array_equal(labels, ref['labels'])
    np.testing.assert_allclose(scores, ref['scores'], rtol=0, atol=1e-4)
    np.testing.assert_allclose(boxes, ref['bboxes'], rtol=1e-4, atol=1e-3)
    if masks_thr is not None:
        flipped = np.mean((np.asarray(got[3]) >= masks_thr) != np.asarray(ref['masks']))
        assert flipped <= 1e-3, flipped


def as_numpy(instances):
    return {k: v.numpy() for k, v in instances.items()}


@pytest.mark.parametrize(
    'config,shape', [
        ('configs/toy/mask-rcnn_mavit-t_fpn_toy.py', (96, 128)),
        ('configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py', (128, 160)),
    ],
    ids=['mask_rcnn_toy', 'retinanet'])
def test_detector_export_matches_mmdet_predict(config, shape, tmp_path):
    from mavit_mm.config.run_config import build_model, load_model_config
    model = build_model(load_model_config(config)).eval()
    if hasattr(getattr(model, 'bbox_head', None),
               'retina_cls'):  # random weights saturate every score: spread them over (0, 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            model.bbox_head.retina_cls.weight.normal_(0, 1e-3, generator=g)
            model.bbox_head.retina_cls.bias.normal_(-3.0, 1.0, generator=g)
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    ref = as_numpy(mmdet_predictions(copy.deepcopy(model), x))
    module, kind = exportable_module(copy.deepcopy(model), for_export=False)
    with torch.no_grad():
        eager = [t.numpy() for t in module(x)]
    with_masks = 'masks' in ref
    assert kind == 'detector' and len(eager) == (4 if with_masks else 3)
    thr = 0.5 if with_masks else None
    assert_same_detections(eager, ref, thr)  # the traceable post-processing is mmdet's
    out = tmp_path / 'det.onnx'
    info = export_onnx(model, str(out), shape)
    assert info['outputs'] == ['boxes', 'scores', 'labels'] + (['masks'] if with_masks else [])
    got = onnxruntime_outputs(out, x, tmp_path, 'det')
    assert_same_detections(got, ref, thr)
    if with_masks:
        assert got[3].shape == (len(ref['labels']), *shape)
        # mask probabilities: onnxruntime's CPU kernels round differently from torch's (1.4e-4 seen with
        # onnxruntime 1.32 and torch 2.14)
        assert np.abs(got[3] - eager[3]).max() <= 1e-3

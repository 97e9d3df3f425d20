"""ImageNet classification with mmpretrain: the release's head, its checkpoints, the converters, and
mmpretrain.models beside transformers 5."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

import mavit_mm.classification  # noqa: F401  (before mmpretrain.models)
from mavit_mm import MAViT
from mavit_mm.config.run_config import build_model
from helpers import ROOT, randomize_, run_tool
from reference import reference_cls_logits

PAPER = {'t': 16, 's': 27, 'b': 50, 'l': 98}  # Table 2, M
PAPER_GFLOPS = {'t': 2.5, 's': 4.6, 'b': 9.9, 'l': 16.1}  # Table 2, 224x224


def build_classifier(path: str):
    return build_model(Config.fromfile(osp.join(ROOT, path)))


@pytest.mark.parametrize('arch', PAPER)
def test_classifier_builds_with_paper_params(arch):
    model = build_classifier(f'configs/imagenet/mavit-{arch}_8xb128_in1k.py')
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - PAPER[arch]) <= 0.5
    assert model.backbone.extra_norms is None


class _Logits(torch.nn.Module):

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(x, mode='tensor')


@pytest.mark.parametrize('arch', PAPER_GFLOPS)
def test_classifier_flops_as_the_paper_counts(arch):
    """Module operations at 224x224 (ptflops' module hooks, the mmcv get_flops convention): within 3 %."""
    from ptflops import get_model_complexity_info
    model = build_classifier(f'configs/imagenet/mavit-{arch}_8xb128_in1k.py').eval()
    macs, _ = get_model_complexity_info(
        _Logits(model), (3, 224, 224), as_strings=False, print_per_layer_stat=False, backend='pytorch')
    assert abs(macs / 1e9 / PAPER_GFLOPS[arch] - 1) <= 0.03, macs / 1e9


def release_cls_state(arch='tiny', classes=1000, projection=2048, width=512):
    state = {k: v for k, v in randomize_(MAViT(arch=arch)).state_dict().items() if not k.startswith('extra_norms')}
    g = torch.Generator().manual_seed(3)
    state.update({
        'proj.weight': 0.02 * torch.randn(projection, width, 1, 1, generator=g),
        'proj.bias': 0.1 * torch.randn(projection, generator=g),
        'norm.weight': 1 + 0.1 * torch.randn(projection, generator=g),
        'norm.bias': 0.1 * torch.randn(projection, generator=g),
        'norm.running_mean': 0.1 * torch.randn(projection, generator=g),
        'norm.running_var': 0.5 + torch.rand(projection, generator=g),
        'norm.num_batches_tracked': torch.tensor(100),
        'head.weight': 0.02 * torch.randn(classes, projection, 1, 1, generator=g),
        'head.bias': torch.zeros(classes)
    })
    return state


def test_release_checkpoint_gives_release_logits(tmp_path):
    state = release_cls_state()
    src = tmp_path / 'mavit_t_release.pth'
    torch.save({'model': state, 'epoch': 299}, src)
    dst = tmp_path / 'mavit-t_in1k_mmpretrain.pth'
    out = run_tool('tools/model_converters/mavit_release_cls.py', str(src), str(dst), '--to', 'mmpretrain')
    assert out.returncode == 0, out.stderr
    model = build_classifier('configs/imagenet/mavit-t_8xb128_in1k.py')
    ckpt = torch.load(dst, map_location='cpu')
    missing, unexpected = model.load_state_dict(ckpt['state_dict'], strict=False)
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = model.eval()(x, mode='tensor')
        expected = reference_cls_logits(state, x, [2, 2, 6, 2], [1, 2, 4, 8])
    assert got.shape == (2, 1000)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize('prefix', [True, False])
def test_backbone_converter_round_trip(tmp_path, prefix):
    state = release_cls_state()
    src, dst = tmp_path / 'release.pth', tmp_path / 'backbone.pth'
    torch.save({'model': state}, src)
    args = ['tools/model_converters/mavit_release_cls.py', str(src), str(dst), '--to', 'backbone']
    out = run_tool(*(args + ([] if prefix else ['--no-prefix'])))
    assert out.returncode == 0, out.stderr
    keys = list(torch.load(dst)['state_dict'])
    assert all(k.startswith('backbone.') for k in keys) == prefix
    model = MAViT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for k, v in model.state_dict().items():
        if not k.startswith('extra_norms'):
            torch.testing.assert_close(v, state[k], msg=k)


def test_dense_converter_maps_every_key_and_refuses_a_wrong_config(tmp_path):
    cfg = 'configs/retinanet/retinanet_mavit-t_fpn_1x_coco.py'
    c = Config.fromfile(osp.join(ROOT, cfg))
    c.model.backbone.init_cfg = None
    model = build_model(c)
    src = tmp_path / 'retinanet_t_1x.pth'  # a DDP-prefixed mmdet 2.x-style file
    torch.save(
        {
            'state_dict': {
                f'module.{k}': v
                for k, v in model.state_dict().items()
            },
            'meta': {
                'mmdet_version': '2.11.0',
                'CLASSES': ('person', )
            }
        }, src)
    dst = tmp_path / 'converted.pth'
    out = run_tool('tools/model_converters/mavit_release_dense.py', str(src), cfg, str(dst))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'{len(model.state_dict())} of {len(model.state_dict())} model tensors mapped' in out.stdout
    load_checkpoint(model, str(dst), strict=True)
    wrong = run_tool('tools/model_converters/mavit_release_dense.py', str(src),
                     'configs/retinanet/retinanet_mavit-s_fpn_1x_coco.py', str(tmp_path / 'x.pth'))
    assert wrong.returncode == 1 and 'shapes that differ' in wrong.stdout
    assert not (tmp_path / 'x.pth').exists()


def test_mmpretrain_models_import_beside_transformers_5(tmp_path):
    """A transformers 5 layout (the names mmpretrain's BLIP imports are gone): plain mmpretrain.models
    fails to import, and imports once mavit_mm.classification ran first."""
    pkg = tmp_path / 'transformers'
    (pkg / 'models' / 'bert').mkdir(parents=True)
    (pkg / '__init__.py').write_text("__version__ = '5.0.0'\n")
    (pkg / 'modeling_utils.py').write_text('class PreTrainedModel:\n    pass\n')
    for sub in ('activations', 'modeling_outputs'):
        (pkg / f'{sub}.py').write_text('')
    (pkg / 'models' / '__init__.py').write_text('')
    (pkg / 'models' / 'bert' / '__init__.py').write_text('')
    (pkg / 'models' / 'bert' / 'configuration_bert.py').write_text('class BertConfig:\n    pass\n')
    dist = tmp_path / 'transformers-5.0.0.dist-info'
    dist.mkdir()
    (dist / 'METADATA').write_text('Metadata-Version: 2.1\nName: transformers\nVersion: 5.0.0\n')
    env = {**os.environ, 'PYTHONPATH': f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}'}
    plain = subprocess.run([sys.executable, '-c', 'import mmpretrain.models'],
                           capture_output=True,
                           text=True,
                           env=env,
                           cwd=ROOT)
    assert plain.returncode != 0
    fixed = subprocess.run([
        sys.executable, '-c', 'import transformers, mavit_mm.classification, mmpretrain.models; '
        'from mmpretrain.registry import MODELS; print(transformers.__file__, MODELS.get("ImageClassifier"))'
    ],
                           capture_output=True,
                           text=True,
                           env=env,
                           cwd=ROOT)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert str(tmp_path) in fixed.stdout and 'ImageClassifier' in fixed.stdout

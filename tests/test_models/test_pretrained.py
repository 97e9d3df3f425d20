"""Release checkpoints (classification, detection/segmentation) load into MAViT unchanged."""
import pytest
import torch

from mavit_mm import MAViT
from mavit_mm.models.pretrained import load_pretrained_backbone
from helpers import randomize_
from reference import reference_forward


@pytest.fixture(scope='module')
def release_tiny():
    """A dense-prediction state dict in the release's layout, with non-trivial values."""
    return {k: v.clone() for k, v in randomize_(MAViT(arch='tiny')).state_dict().items()}


def classification_checkpoint(state):
    """The release's ImageNet file: {'model': backbone without extra_norms + proj/norm/head}."""
    cls_state = {k: v for k, v in state.items() if not k.startswith('extra_norms.')}
    cls_state.update({
        'proj.weight': torch.randn(2048, 512, 1, 1),
        'proj.bias': torch.zeros(2048),
        'norm.weight': torch.ones(2048),
        'norm.bias': torch.zeros(2048),
        'norm.running_mean': torch.zeros(2048),
        'norm.running_var': torch.ones(2048),
        'norm.num_batches_tracked': torch.tensor(0),
        'head.weight': torch.randn(1000, 2048, 1, 1),
        'head.bias': torch.zeros(1000)
    })
    return {'model': cls_state, 'epoch': 299}


def test_detection_checkpoint_loads_and_gives_release_outputs(tmp_path, release_tiny):
    path = tmp_path / 'mask_rcnn_mavit_t.pth'
    det = {f'backbone.{k}': v for k, v in release_tiny.items()}
    det['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 64, 1, 1)
    torch.save({'state_dict': det, 'meta': {'epoch': 12}}, path)
    model = MAViT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    missing, unexpected = load_pretrained_backbone(model, str(path))
    assert missing == [] and unexpected == []
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference_forward(release_tiny, x, [2, 2, 6, 2], [1, 2, 4, 8],
                                     ['mala', 'mala', 'softmax', 'softmax'])
        for got, exp in zip(model(x), expected):
            assert (got - exp).abs().max() <= 1e-5 * exp.abs().max()


def test_classification_checkpoint_ignores_head_and_reports_missing_out_norms(tmp_path, release_tiny):
    path = tmp_path / 'mavit_t_in1k.pth'
    torch.save(classification_checkpoint(release_tiny), path)
    model = MAViT(arch='tiny')
    missing, unexpected = load_pretrained_backbone(model, str(path))
    assert unexpected == []
    assert sorted(missing) == sorted(f'extra_norms.{i}.norm.{t}' for i in range(4) for t in ('weight', 'bias'))
    torch.testing.assert_close(model.layers[2].blocks[3].attn.qkvo.weight,
                               release_tiny['layers.2.blocks.3.attn.qkvo.weight'])
    # without output norms (the classification layout) nothing is missing
    missing, unexpected = load_pretrained_backbone(MAViT(arch='tiny', out_norms=False), str(path))
    assert missing == [] and unexpected == []


def test_wrong_arch_names_shapes_and_the_right_arch(tmp_path):
    path = tmp_path / 'small.pth'
    torch.save({'state_dict': MAViT(arch='small').state_dict()}, path)
    with pytest.raises(ValueError, match=r"MAViT-small checkpoint: set arch='small'") as err:
        load_pretrained_backbone(MAViT(arch='tiny'), str(path))
    assert '129 tensors differ in shape' in str(err.value)
    assert 'layers.2.blocks.0.gamma_2: checkpoint (1, 320, 1, 1) vs model (1, 256, 1, 1)' in str(err.value)


def test_not_a_mavit_checkpoint(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.randn(64, 3, 7, 7)}}, path)
    with pytest.raises(ValueError, match='holds no MAViT backbone weights'):
        load_pretrained_backbone(MAViT(arch='tiny'), str(path))


def test_unexpected_keys_are_reported(tmp_path, release_tiny):
    path = tmp_path / 'extra.pth'
    torch.save({**release_tiny, 'layers.0.blocks.9.pos.weight': torch.zeros(64, 1, 3, 3)}, path)
    _, unexpected = load_pretrained_backbone(MAViT(arch='tiny'), str(path))
    assert unexpected == ['layers.0.blocks.9.pos.weight']

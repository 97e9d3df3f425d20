"""projects/: MAViT swapped into stock mmdet / mmseg configs, and MALA as a drop-in attention for
mmpretrain's DeiT and Swin (the paper's Table 9)."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import mavit_mm.classification  # noqa: F401  (before mmpretrain.models)
import mavit_mm.config.backbone_swap as backbone_swap
from mavit_mm.config.backbone_swap import render_config, stock_outputs, swap_backbone
from mavit_mm.config.run_config import build_model, load_config
from mavit_mm.config.swap_sweep import forward_once as tensor_forward
from helpers import ROOT
from reference import region_mala

sys.path.insert(0, ROOT)  # projects.* as custom_imports see it from the repository root

STOCK = [  # a dozen families: necks (FPN, ChannelMapper, DilatedEncoder), neck-less heads, dilated nets
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
    'mmdet::atss/atss_r50_fpn_1x_coco.py',
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    'mmdet::detr/detr_r50_8xb2-150e_coco.py',
    'mmdet::yolof/yolof_r50-c5_8xb8-1x_coco.py',
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
    'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py',
    'mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py',
    'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    'mmseg::ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py',
    'mmdet::yolox/yolox_s_8xb8-300e_coco.py',  # CSPDarknet counts its stem: out_indices (2, 3, 4) = strides 8-32
]


@pytest.mark.parametrize('stock', STOCK, ids=lambda s: s.split('/')[-1][:-3])
def test_swapped_stock_config_builds_and_runs(stock, tmp_path):
    cfg = load_config(stock)
    overrides = swap_backbone(cfg, 'tiny')
    out = tmp_path / 'swapped.py'
    out.write_text(render_config(stock, str(out), overrides))
    new = Config.fromfile(str(out))
    assert new.model.backbone.type == 'MAViT' and new.custom_imports.imports == ['mavit_mm']
    keys = new.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['norm'] == dict(decay_mult=0.0) and keys['gamma_'] == dict(decay_mult=0.0)
    new.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = build_model(new)
    model.init_weights()  # as the Runner does: DINO's level_embed is uninitialised memory until then
    model.eval()
    if new.default_scope == 'mmseg':  # predict: mmseg 1.2's Mask2Former has no 'tensor' mode
        from mmengine.registry import DefaultScope
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=dict(img_shape=(128, 160), ori_shape=(128, 160)))
        with DefaultScope.overwrite_default_scope('mmseg'), torch.no_grad():
            preds = model.test_step(
                dict(inputs=[torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8)], data_samples=[sample]))
        flat = [preds[0].seg_logits.data]
        assert preds[0].pred_sem_seg.data.shape == (1, 128, 160)
    else:
        size = 256 if 'dino' in stock else 128  # DINO's 900 queries need that many encoder tokens
        flat = [
            t for t in torch.utils._pytree.tree_leaves(tensor_forward(model, new.default_scope, size))
            if isinstance(t, torch.Tensor)
        ]
    assert flat and all(torch.isfinite(t).all() for t in flat if t.is_floating_point())


RESNET_50 = [(4, 256), (8, 512), (16, 1024), (32, 2048)]  # ResNet's strides and widths (He et al., Table 1)


@pytest.mark.parametrize(
    'stock, expected, devices',
    [
        ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', RESNET_50, ['meta']),
        # mmcv's deformable convolution has no meta kernel: the CPU forward decides
        ('mmdet::dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py', RESNET_50, ['meta', 'cpu']),
        # ResNet-D8: stages 3-4 dilated instead of strided
        ('mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py', RESNET_50[:2] + [(8, 1024), (8, 2048)], ['meta']),
        # HRNet-W18: branches of C, 2C, 4C, 8C channels, C = 18 (Wang et al.), hundreds of BatchNorms on meta
        ('mmseg::hrnet/fcn_hr18_4xb2-40k_cityscapes-512x1024.py', [(4, 18), (8, 36), (16, 72), (32, 144)], ['meta']),
    ],
    ids=['resnet', 'deformable', 'dilated', 'hrnet'])
def test_stock_outputs_probe_shapes_on_meta_and_fall_back_to_the_cpu(stock, expected, devices, monkeypatch):
    probed = []
    probe = backbone_swap._probe

    def spy(backbone, shape, device, raise_errors=False):
        probed.append(device)
        return probe(backbone, shape, device, raise_errors)

    monkeypatch.setattr(backbone_swap, '_probe', spy)
    assert stock_outputs(load_config(stock)) == expected
    assert probed == devices


def test_meta_probe_batch_norm_shortcut_spares_real_tensors_and_is_undone(monkeypatch):
    batch_norm = torch.nn.functional.batch_norm
    kernel = torch.batch_norm  # what F.batch_norm calls: the meta decomposition or the CPU kernel
    reached = []
    monkeypatch.setattr(torch, 'batch_norm', lambda x, *a, **k: reached.append(x.device.type) or kernel(x, *a, **k))
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.fill_(1.0)
    x = torch.ones(1, 3, 4, 5)
    with torch.device('meta'):
        meta_bn = torch.nn.BatchNorm2d(3).eval()
    with backbone_swap._shape_only_batch_norm():
        assert torch.equal(bn(x), torch.zeros_like(x))  # a CPU tensor: normalised as ever
        out = meta_bn(x.to('meta'))
        assert out.is_meta and out.shape == x.shape
    assert reached == ['cpu']  # the meta tensor never reached BatchNorm's kernel
    assert torch.nn.functional.batch_norm is batch_norm
    meta_bn(x.to('meta'))
    assert reached == ['cpu', 'meta']  # and after the block it does again


def test_swap_maps_by_stride_and_fixes_the_normalisation():
    yolox = swap_backbone(load_config('mmdet::yolox/yolox_s_8xb8-300e_coco.py'), 'tiny')
    assert yolox['model']['backbone']['out_indices'] == (1, 2, 3)
    assert yolox['model']['neck']['in_channels'] == [128, 256, 512]
    # YOLOX feeds raw BGR pixels, the caffe ResNet BGR with caffe means: MAViT's checkpoints want ImageNet RGB
    for stock in ('mmdet::yolox/yolox_s_8xb8-300e_coco.py', 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'):
        pre = swap_backbone(load_config(stock), 'tiny')['model']['data_preprocessor']
        assert pre == dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
    assert 'data_preprocessor' not in swap_backbone(load_config(STOCK[0]), 'tiny')['model']


def test_swap_refuses_a_backbone_without_a_stride_pyramid():
    with pytest.raises(ValueError, match='outputs all its maps at stride 16: a single-scale'):
        swap_backbone(load_config('mmseg::vit/vit_deit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py'), 'tiny')


def test_swap_refuses_cascaded_heads_that_would_read_different_strides():
    # OCRNet on ResNet-D8: FCNHead reads stage 3 and OCRHead stage 4, both at stride 8 in the stock model
    with pytest.raises(ValueError, match=r'read backbone maps \[2, 3\], all at stride 8 .* strides \[16, 32\]'):
        swap_backbone(load_config('mmseg::ocrnet/ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024.py'), 'tiny')


def test_swap_gives_a_convless_head_its_new_width_as_channels():
    # Segmenter's linear FCNHead (num_convs=0) asserts channels == in_channels; ViT-S's stride-16 map -> stage 2
    model = swap_backbone(load_config('mmseg::segmenter/segmenter_vit-s_fcn_8xb1-160k_ade20k-512x512.py'))['model']
    assert model['backbone']['out_indices'] == (2, )
    assert model['decode_head'] == dict(in_channels=256, channels=256)


def test_swap_refuses_a_neck_that_passes_the_backbone_maps_on():
    with pytest.raises(ValueError, match=r"model.neck \(SSDNeck\) passes the backbone's maps on .* edit the config"):
        swap_backbone(load_config('mmdet::ssd/ssd300_coco.py'), 'tiny')


def test_swap_rewrites_neck_chains_and_keeps_tuples():
    dyhead = swap_backbone(load_config('mmdet::dyhead/atss_r50-caffe_fpn_dyhead_1x_coco.py'), 'tiny')
    necks = dyhead['model']['neck']  # FPN then DyHead: the whole list, the FPN's widths changed
    assert [n['type'] for n in necks] == ['FPN', 'DyHead'] and necks[0]['in_channels'] == [64, 128, 256, 512]
    jpu = swap_backbone(load_config('mmseg::fastfcn/fastfcn_r50-d32_jpu_aspp_4xb2-80k_cityscapes-512x1024.py'))
    assert jpu['model']['neck']['in_channels'] == (128, 256, 512)  # JPU asserts a tuple


def test_swap_keeps_what_reads_the_neck():
    cfg = load_config('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    overrides = swap_backbone(cfg, 'small')
    assert overrides['model']['neck'] == {'in_channels': [64, 128, 320, 512]}
    assert set(overrides['model']) == {'backbone', 'neck'}  # RPN / RoI heads read the FPN: untouched
    assert overrides['optim_wrapper']['optimizer']['type'] == 'AdamW'  # SGD -> the paper's AdamW
    dino = swap_backbone(load_config('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'), 'tiny')
    assert dino['model']['backbone']['out_indices'] == (1, 2, 3)
    assert dino['model']['neck'] == {'in_channels': [128, 256, 512]}
    assert 'optimizer' not in dino['optim_wrapper']  # already AdamW: kept
    psp = swap_backbone(load_config('mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py'), 'tiny')
    assert psp['model']['decode_head'] == {'in_channels': 512}
    assert psp['model']['auxiliary_head'] == {'in_channels': 256}


def test_swap_backbone_cli(tmp_path):
    out = tmp_path / 'retina.py'
    res = subprocess.run([
        sys.executable, 'tools/misc/swap_backbone.py', 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '--arch',
        'base', '--out',
        str(out)
    ],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'MAViT-base' in res.stdout and out.is_file()
    assert Config.fromfile(str(out)).model.neck.in_channels == [96, 192, 384, 512]


def test_worked_examples_are_what_the_tool_writes():
    folder = osp.join(ROOT, 'projects/mavit_backbone_swap/configs')
    examples = sorted(glob.glob(osp.join(folder, '*.py')))
    assert len(examples) >= 4
    for path in examples:
        first = open(path).read()
        base = first.split("_base_ = '")[1].split("'")[0]
        arch = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}[osp.basename(path).split('mavit-')[1][0]]
        expected = render_config(base, path, swap_backbone(load_config(base), arch))
        assert first == expected, f'{path} is stale: rerun tools/misc/swap_backbone.py'


# ---------------------------------------------------------------- MALA drop-in (Table 9)
DROP_IN = {  # config -> stock config it inherits
    'deit-tiny-mala_4xb256_in1k.py': 'mmpretrain::deit/deit-tiny_4xb256_in1k.py',
    'swin-tiny-mala_16xb64_in1k.py': 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    'swin-small-mala_16xb64_in1k.py': 'mmpretrain::swin_transformer/swin-small_16xb64_in1k.py',
}


@pytest.mark.parametrize('config', DROP_IN)
def test_drop_in_keeps_stock_params_and_uses_mala(config):
    from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA

    from projects.mala_drop_in.mala_drop_in import MALAMultiheadAttention, WindowMALA
    cfg = Config.fromfile(osp.join(ROOT, 'projects/mala_drop_in/configs', config))
    stock = build_model(load_config(DROP_IN[config]))
    model = build_model(cfg)
    n_stock = sum(p.numel() for p in stock.parameters())
    n_mala = sum(p.numel() for p in model.parameters())
    bias_tables = sum(m.relative_position_bias_table.numel() for m in stock.modules() if isinstance(m, WindowMSA))
    assert n_mala == n_stock - bias_tables  # only Swin's bias tables go (0.02 M / 0.04 M)
    kinds = {type(m) for m in model.modules()}
    assert MultiheadAttention not in kinds and WindowMSA not in kinds
    assert kinds & {MALAMultiheadAttention, WindowMALA}
    assert set(model.state_dict()) == {k for k in stock.state_dict() if 'bias_table' not in k}


def test_window_mala_matches_explicit_scores_with_swin_shift_mask():
    from projects.mala_drop_in.mala_drop_in import windowed_mala
    torch.manual_seed(0)
    b, h, n, d = 4, 2, 16, 8
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    region = torch.tensor([0] * 6 + [1] * 4 + [2] * 6)
    allowed = [region[:, None] == region[None, :], torch.ones(n, n, dtype=torch.bool)]
    mask = torch.stack([torch.where(a, 0.0, -100.0) for a in allowed])  # 2 windows, Swin's form
    out = windowed_mala(q, k, v, d**-0.5, mask)
    for i in range(b):
        expected, scores = region_mala(q[i], k[i], v[i], d**-0.5, allowed[i % 2])
        torch.testing.assert_close(out[i].double(), expected, rtol=1e-5, atol=1e-6)
        assert torch.allclose(scores.sum(-1), torch.ones(h, n, dtype=torch.double))  # rows sum to 1
    unmasked = windowed_mala(q, k, v, d**-0.5)
    torch.testing.assert_close(unmasked.double(), region_mala(q, k, v, d**-0.5)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('config', DROP_IN)
def test_drop_in_trains_two_iterations_on_toy_data(config, tmp_path):
    from mavit_mm.toy_data import make_toy_dataset
    make_toy_dataset(str(tmp_path / 'toy'), num_train=8, num_val=4, size=64, seed=2)
    cfg = Config.fromfile(osp.join(ROOT, 'projects/mala_drop_in/configs', config))
    cls_root = str(tmp_path / 'toy' / 'cls')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=224), dict(type='PackInputs')]
    cfg.train_dataloader = dict(
        batch_size=2,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(type='CustomDataset', data_root=cls_root, data_prefix='train', pipeline=pipeline))
    cfg.model.head.num_classes = 3
    cfg.model.train_cfg = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False)
    path = tmp_path / config
    cfg.dump(str(path))
    res = subprocess.run(
        [sys.executable, 'tools/train.py',
         str(path), '--work-dir', str(tmp_path / 'w')],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / 'w' / 'iter_2.pth').is_file()

# deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py with a MAViT backbone, written by tools/misc/swap_backbone.py.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='small',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mavit-s_in1k.pth')),
    pretrained=None,
    decode_head=dict(in_channels=512, c1_in_channels=64),
    auxiliary_head=dict(in_channels=320))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.0), gamma_=dict(decay_mult=0.0))),
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))

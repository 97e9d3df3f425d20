# dino-4scale_r50_8xb2-12e_coco.py with a MAViT backbone, written by tools/misc/swap_backbone.py.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='tiny',
        out_indices=(1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mavit-t_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512]))
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            backbone=dict(lr_mult=0.1),
            norm=dict(decay_mult=0.0),
            gamma_=dict(decay_mult=0.0))))

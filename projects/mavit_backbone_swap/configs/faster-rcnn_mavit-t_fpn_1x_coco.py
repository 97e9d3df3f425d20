# faster-rcnn_r50_fpn_1x_coco.py with a MAViT backbone, written by tools/misc/swap_backbone.py.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mavit-t_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.0), gamma_=dict(decay_mult=0.0))),
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))

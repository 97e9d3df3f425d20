# mask2former_r50_8xb2-lsj-50e_coco-panoptic.py with a MAViT backbone, written by tools/misc/swap_backbone.py.
_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mavit-t_in1k.pth')),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            backbone=dict(lr_mult=0.1, decay_mult=1.0),
            query_embed=dict(lr_mult=1.0, decay_mult=0.0),
            query_feat=dict(lr_mult=1.0, decay_mult=0.0),
            level_embed=dict(lr_mult=1.0, decay_mult=0.0),
            norm=dict(decay_mult=0.0),
            gamma_=dict(decay_mult=0.0))))

# Semantic FPN 80k with MAViT-S on ADE20K: the MAViT-T recipe with the small backbone.
_base_ = './fpn_mavit-t_8xb2-80k_ade20k-512x512.py'

pretrained = 'checkpoints/mavit-s_in1k.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))

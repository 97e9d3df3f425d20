# Semantic FPN 80k with MAViT-B on ADE20K: the MAViT-T recipe with the base backbone.
_base_ = './fpn_mavit-t_8xb2-80k_ade20k-512x512.py'

pretrained = 'checkpoints/mavit-b_in1k.pth'
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))

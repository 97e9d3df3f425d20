# RetinaNet 1x with MAViT-B: the MAViT-T recipe with the base backbone.
_base_ = './retinanet_mavit-t_fpn_1x_coco.py'

pretrained = 'checkpoints/mavit-b_in1k.pth'
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))

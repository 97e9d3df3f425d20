# RetinaNet 1x with MAViT-L: the MAViT-T recipe with the large backbone.
_base_ = './retinanet_mavit-t_fpn_1x_coco.py'

pretrained = 'checkpoints/mavit-l_in1k.pth'
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))

# Mask R-CNN 3x + multi-scale with MAViT-B (paper Table 3: 67 M, 372 G, 53.2 AP^b / 47.0 AP^m).
_base_ = './mask-rcnn_mavit-s_fpn_ms-crop-3x_coco.py'

pretrained = 'checkpoints/mavit-b_in1k.pth'
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))

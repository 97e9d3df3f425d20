# Cascade Mask R-CNN 3x + multi-scale with MAViT-B (paper Table 3: 105 M, 851 G, 55.5 AP^b / 48.0 AP^m).
_base_ = './cascade-mask-rcnn_mavit-s_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

pretrained = 'checkpoints/mavit-b_in1k.pth'
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))

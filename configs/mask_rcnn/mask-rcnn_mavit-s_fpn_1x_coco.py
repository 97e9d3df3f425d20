# Mask R-CNN 1x with MAViT-S: the MAViT-T recipe with the small backbone.
_base_ = './mask-rcnn_mavit-t_fpn_1x_coco.py'

pretrained = 'checkpoints/mavit-s_in1k.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))

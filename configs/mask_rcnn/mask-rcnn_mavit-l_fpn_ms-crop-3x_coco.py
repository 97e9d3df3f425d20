# Mask R-CNN 3x + multi-scale with MAViT-L (paper Table 3: 114 M, 501 G, 53.6 AP^b / 47.2 AP^m).
# The release trains L with 1 image per GPU (8 in total) and lr 2e-4.
_base_ = './mask-rcnn_mavit-s_fpn_ms-crop-3x_coco.py'

pretrained = 'checkpoints/mavit-l_in1k.pth'
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=2e-4))
auto_scale_lr = dict(base_batch_size=8)

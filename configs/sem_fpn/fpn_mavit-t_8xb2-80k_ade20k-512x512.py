# Semantic FPN 80k with MAViT-T on ADE20K (paper Table 5: 18 M, 136 G, 47.6 mIoU).
# Recipe of the release: 8 GPUs x 2 images, AdamW lr 1e-4 wd 1e-4, poly (power 0.9, min lr 1e-6),
# 80k iterations; the stock ADE20K pipeline (512x512 crops, single-scale test at 2048x512).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/mavit-t_in1k.pth'
model = dict(
    pretrained=None,  # the stock ResNet weights; MAViT's come through init_cfg
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
max_iters = 80000
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)

# tools/train.py applies the host-side speed-ups that keep the numerics: merged param groups with a fused
# optimizer, pinned memory, persistent workers (docs/speed.md)
fast_train = True

# The neck's and heads' convolutions in size buckets (test images of many sizes: a few cuDNN plans, not one
# per image), and on one GPU the backbone's training step replayed from CUDA graphs (fixed 512x512 crops; the
# same values and DropPath draws; with SyncBN, i.e. on several GPUs, it runs eagerly). docs/speed.md
custom_hooks = [
    dict(type='ConvSizeBucketsHook'),
    dict(type='CUDAGraphHook', module='backbone', mode='train'),
]

# Mask R-CNN 3x + multi-scale with MAViT-S (paper Table 3: 44 M, 262 G, 51.4 AP^b / 45.5 AP^m).
# The stock Swin 3x recipe (DETR-style multi-scale + crop, 36 epochs, steps 27 and 33) with the release's
# optimizer: AdamW lr 4e-4 wd 0.05, no decay on parameters named 'norm', 500 warm-up iterations,
# mixed precision with a static loss scale of 512 (mmdet 2.x `fp16 = dict()`).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/mavit-s_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='small',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(lr=4e-4),
    paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

# tools/train.py applies the host-side speed-ups that keep the numerics: merged param groups with a fused
# optimizer, pinned memory, anchor / RoI assignment and mask targets on the GPU (docs/speed.md);
# --fast-train adds the on-device sampler (another random stream)
fast_train = True

# Mask R-CNN 1x with MAViT-T (paper Table 4: 33 M params, 219 G FLOPs, 47.6 AP^b / 42.9 AP^m).
# Recipe of the release: 8 GPUs x 2 images, AdamW lr 4e-4 wd 0.05 (no decay on norms), steps at 8 and 11,
# mixed precision with a static loss scale of 512, SyncBN in the backbone (mmengine turns it into BN when
# not distributed).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)

# The release's ImageNet-1K weights (see docs/pretrained.md); override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'checkpoints/mavit-t_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))

# mmdet 2.x `fp16 = dict()` = mmcv's Fp16OptimizerHook(loss_scale=512.): a static scale, as here;
# --cfg-options optim_wrapper.loss_scale=dynamic to let it adapt.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

# 8 GPUs x 2 images: --auto-scale-lr rescales the lr for other totals.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# tools/train.py applies the host-side speed-ups that keep the numerics: merged param groups with a fused
# optimizer, pinned memory, anchor / RoI assignment and mask targets on the GPU (docs/speed.md);
# --fast-train adds the on-device sampler (another random stream)
fast_train = True

# On one GPU the backbone's training step is replayed from CUDA graphs, one per padded batch shape for the
# 48 shapes that first come twice (COCO's keep-ratio resize gives a few dozen common ones): the same values
# and DropPath draws, less host time per iteration; other shapes, SyncBN (several GPUs) and a GPU with less
# than a quarter of its memory free run eagerly. docs/speed.md
custom_hooks = [dict(type='CUDAGraphHook', module='backbone', mode='train', max_graphs=48)]

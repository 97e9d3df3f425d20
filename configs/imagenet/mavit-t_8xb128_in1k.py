# MAViT-T on ImageNet-1K (paper Table 2: 16 M params, 2.5 G FLOPs, 82.9 top-1).
# Recipe: 300 epochs from scratch, 8 GPUs x 128 = 1024 images, AdamW lr 1e-3 wd 0.05, 5 warm-up epochs then
# cosine, DeiT-style augmentation (RandAugment, Mixup 0.8, CutMix 1.0, random erasing, label smoothing 0.1),
# stochastic depth 0.1, repeated augmentation, EMA, mixed precision. The head is the release's (1x1
# projection, BN, swish, pooling, 1x1 classifier). docs/recipes.md compares it with the release field by field.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
# mavit_mm.classification first: it keeps mmpretrain.models importable beside transformers 5.
custom_imports = dict(imports=['mavit_mm.classification', 'mavit_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='MAViT', arch='tiny', out_indices=(3, ), out_norms=False),
    neck=None,
    head=dict(
        type='MAViTClsHead',
        num_classes=1000,
        in_channels=512,
        projection=2048,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# The release's DeiT recipe: repeated augmentation (3 views of each image per epoch, spread over the GPUs),
# mixed precision (dynamic loss scale), and an EMA of the weights, decay 0.99996 per step at batch 512
# scaled to the batch: 0.99996 ** (1024 / 512); buffers averaged too, as timm's ModelEma does.
# Switches back: train_dataloader.sampler=dict(type='DefaultSampler', shuffle=True), custom_hooks=[],
# optim_wrapper.type=OptimWrapper.
# drop_last as DeiT's loader: 1251 iterations per epoch, as the release's (DeiT's RASampler keeps 1,281,024
# of the 1,281,167 images, mmpretrain's all of them, padded to 8 x 160,146).
train_dataloader = dict(batch_size=128, drop_last=True,
                        sampler=dict(_delete_=True, type='RepeatAugSampler', num_repeats=3, shuffle=True))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
sync_bn = 'torch'  # the release converts every BN to SyncBN (the stem's, the downsamples', the head's)
custom_hooks = [dict(type='EMAHook', momentum=1 - 0.99996 ** (1024 / 512), update_buffers=True,
                     priority='ABOVE_NORMAL')]
# timm's cosine schedule stepped once per epoch, as the release's main.py: 5 warm-up epochs from 1e-6, then
# the cosine of all 300 epochs down to 1e-5 (not restarted after the warm-up).
param_scheduler = [
    dict(type='EpochWarmupCosineLR', T_max=300, warmup_epochs=5, warmup_lr=1e-6, eta_min=1e-5, by_epoch=True)
]

# tools/train.py applies the host-side speed-ups that keep the numerics: merged param groups with a fused
# optimizer, pinned memory, persistent workers (docs/speed.md)
fast_train = True

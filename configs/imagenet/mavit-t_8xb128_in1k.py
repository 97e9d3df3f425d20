# MAViT-T on ImageNet-1K (paper Table 2: 16 M params, 2.5 G FLOPs, 82.9 top-1).
# Recipe: 300 epochs from scratch, 8 GPUs x 128 = 1024 images, AdamW lr 1e-3 wd 0.05, 5 warm-up epochs then
# cosine, DeiT-style augmentation (RandAugment, Mixup 0.8, CutMix 1.0, random erasing, label smoothing 0.1),
# stochastic depth 0.1. The head is the release's (1x1 projection, BN, swish, pooling, 1x1 classifier).
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

train_dataloader = dict(batch_size=128)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)
]

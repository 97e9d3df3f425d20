# UperNet 160k with MAViT-T on ADE20K (paper Table 5: 44 M, 893 G, 48.4 mIoU single scale).
# The stock Swin UperNet recipe, which is the release's: AdamW lr 6e-5 wd 0.01 (no decay on norms),
# 1500 linear warm-up iterations then poly power 1 to 0, 160k iterations, 8 GPUs x 2 images,
# auxiliary FCN head on stage 3 (weight 0.4); mixed precision as the release.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/mavit-t_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)

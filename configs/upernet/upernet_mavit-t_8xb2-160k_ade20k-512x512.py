# UperNet 160k with MAViT-T on ADE20K (paper Table 5: 44 M, 893 G, 48.4 mIoU single scale).
# The stock Swin UperNet recipe with the release's differences: AdamW lr 6e-5 wd 0.01 (no decay on
# parameters named 'norm'), 1500 linear warm-up iterations over a poly (power 1, to 0) curve that spans
# all 160k iterations (mmcv 1.x's warm-up scales the poly lr; the stock config restarts the poly after
# the warm-up), 8 GPUs x 2 images, auxiliary FCN head on stage 3 (weight 0.4); mixed precision with a
# static loss scale of 512 (the release's Fp16OptimizerHook(loss_scale=512.)).
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
    loss_scale=512.,
    paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.)}))
# Both active from iteration 0: mmengine chains them, so the lr is poly(t) x warm-up(t), as in mmcv 1.x.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160000, by_epoch=False)
]
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
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

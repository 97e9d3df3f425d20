# The README's main job, segmentation half: the real MAViT-T UperNet config on the toy shapes data in
# ADE20K's layout (tools/misc/make_toy_data.py), 128x128 crops, from scratch, minutes on 2 CPU cores.
# Only data, image size, schedule, learning rate, norm and the head widths (512 -> 128 channels: the
# full-width head costs 2 s per CPU step) differ from configs/upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py.
_base_ = '../upernet/upernet_mavit-t_8xb2-160k_ade20k-512x512.py'

data_root = 'data/toy/ade/'
crop_size = (128, 128)
metainfo = dict(classes=('background', 'circle', 'square', 'triangle'),
                palette=[(0, 0, 0), (220, 20, 60), (0, 128, 255), (255, 200, 0)])
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=dict(type='BN'), init_cfg=None),
    decode_head=dict(num_classes=4, channels=128, norm_cfg=dict(type='BN')),
    auxiliary_head=dict(num_classes=4, channels=64, norm_cfg=dict(type='BN')))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
               seg_map_suffix='.png', reduce_zero_label=False)
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/validation',
                                             seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
# The real config's optimizer (mixed precision on a GPU; tools/train.py trains in fp32 without one).
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False)
]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)

# plain training: the side the --fast-train parity tests compare with (tools/train.py --fast-train for the rest),
# without the full-size config's size buckets and CUDA graphs
fast_train = False
custom_hooks = []

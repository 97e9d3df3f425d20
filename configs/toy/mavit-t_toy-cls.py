# The real MAViT-T ImageNet config on the toy shapes' classification layout (data/toy/cls, a folder per
# class; tools/misc/make_toy_data.py), 96x96 inputs, no batch augmentation, a short schedule, on CPU.
_base_ = '../imagenet/mavit-t_8xb128_in1k.py'

data_root = 'data/toy/cls/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
model = dict(
    backbone=dict(drop_path_rate=0.0),
    head=dict(num_classes=3, loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )),
    train_cfg=None)
data_preprocessor = dict(num_classes=3)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=96, crop_ratio_range=(0.6, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=96),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train', metainfo=metainfo,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val', metainfo=metainfo,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 30
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0, end=max_epochs)
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)

# plain training: the side the --fast-train parity tests compare with (tools/train.py --fast-train for the rest)
fast_train = False

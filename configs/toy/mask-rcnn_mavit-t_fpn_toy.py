# The README's main job: the real MAViT-T Mask R-CNN config on the toy shapes data
# (tools/misc/make_toy_data.py), 128x128 images, a few minutes on 2 CPU cores.
# Only data, image size, schedule, lr, proposal / RoI budgets, norm and the backbone's weights differ from
# configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py. As the paper fine-tunes detectors from ImageNet
# weights, this fine-tunes the backbone of the toy UperNet run (configs/toy/upernet_mavit-t_toy.py, run it
# first; tools/run_toy_demo.sh does): 3 epochs, about 6 minutes on 2 CPU cores (docs/toy.md).
_base_ = '../mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'

data_root = 'data/toy/coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'),
                palette=[(220, 20, 60), (0, 128, 255), (255, 200, 0)])
# At most 3 objects per image: far fewer proposals and sampled RoIs than COCO's defaults
# (RoIAlign's CPU backward and the box head's fc dominate a CPU step otherwise).
model = dict(
    backbone=dict(norm_cfg=dict(type='BN'), init_cfg=dict(checkpoint='work_dirs/toy_upernet/iter_400.pth')),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=200), rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# The real config's optimizer (mixed precision on a GPU; tools/train.py trains in fp32 without one).
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[2], gamma=0.1)
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)

# plain training: the side the --fast-train parity tests compare with (tools/train.py --fast-train for the rest)
fast_train = False

# RetinaNet 1x with MAViT-T (paper Table 4: 24 M params, 201 G FLOPs, 45.6 AP).
# Recipe of the release: 8 GPUs x 2 images, AdamW lr 4e-4 wd 1e-4 on every parameter, steps at 8 and 11,
# mixed precision with a static loss scale of 512, SyncBN in the backbone. The FPN starts at stage 2
# (start_level=1) with extra convs on its input, as stock. (docs/recipes.md: tools/analysis_tools/print_recipe.py)
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
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
    neck=dict(in_channels=[64, 128, 256, 512], start_level=1, add_extra_convs='on_input'))

# mmdet 2.x `fp16 = dict(loss_scale=512.)`: static; --cfg-options optim_wrapper.loss_scale=dynamic to adapt it.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=1e-4))
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

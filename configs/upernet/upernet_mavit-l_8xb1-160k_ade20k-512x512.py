# UperNet 160k with MAViT-L on ADE20K: the MAViT-T recipe with the large backbone.
_base_ = './upernet_mavit-t_8xb2-160k_ade20k-512x512.py'

pretrained = 'checkpoints/mavit-l_in1k.pth'
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))
# The release trains L with 1 image per GPU (8 in total); UperHead's pooling BN then relies on SyncBN
# across GPUs (with one image on one GPU it cannot train).
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)

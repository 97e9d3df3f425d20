# MAViT-S on ImageNet-1K: the MAViT-T recipe with the small backbone (its stochastic depth).
_base_ = './mavit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='small'), head=dict(in_channels=512, projection=2048))

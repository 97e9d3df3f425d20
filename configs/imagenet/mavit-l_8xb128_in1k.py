# MAViT-L on ImageNet-1K: the MAViT-T recipe with the large backbone (its stochastic depth).
_base_ = './mavit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='large'), head=dict(in_channels=640, projection=2560))

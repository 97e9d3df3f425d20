# DeiT-T with every softmax attention replaced by MALA, everything else the stock mmpretrain recipe
# (paper Table 9: 72.2 -> 75.1 top-1).
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'
custom_imports = dict(imports=['mavit_mm.classification', 'projects.mala_drop_in.mala_drop_in'],
                      allow_failed_imports=False)
model = dict(backbone=dict(type='MALAVisionTransformer'))

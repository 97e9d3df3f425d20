# Swin-S with every (shifted) window softmax attention replaced by MALA, everything else the stock
# mmpretrain recipe (paper Table 9: 83.0 -> 85.3 top-1).
_base_ = 'mmpretrain::swin_transformer/swin-small_16xb64_in1k.py'
custom_imports = dict(imports=['mavit_mm.classification', 'projects.mala_drop_in.mala_drop_in'],
                      allow_failed_imports=False)
model = dict(backbone=dict(type='MALASwinTransformer'))

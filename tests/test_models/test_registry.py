"""One registration in mmengine's root registry serves mmdet, mmseg and mmpretrain configs."""
import importlib
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mavit_mm import MAViT

SCOPES = ['mmdet', 'mmseg', 'mmpretrain']


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'large'])
@pytest.mark.parametrize('scope', SCOPES)
def test_builds_forward_backward_under_scope(scope, arch):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='MAViT', arch=arch, out_indices=(0, 1, 2, 3)))
    assert type(model) is MAViT
    outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == 4
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(model.patch_embed.proj[0].weight.grad).all()


def test_custom_imports_in_a_config_registers_mavit(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)\n"
                        "model = dict(type='MAViT', arch='t', out_indices=(3,))\n")
    cfg = Config.fromfile(str(cfg_file))  # runs custom_imports
    assert isinstance(MODELS.build(cfg.model), MAViT)


def test_core_import_pulls_in_no_downstream_library():
    code = ("import sys, mavit_mm; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mmdet', 'mmseg', 'mmpretrain'}))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'

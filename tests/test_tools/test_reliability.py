"""Reliability: atomic checkpoint writes, SIGKILL + --resume, mixed precision, odd inputs, clear errors."""
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmengine.config import Config
from mmengine.fileio import get_file_backend

from mavit_mm import MAViT
from mavit_mm.utils.config_tools import check_custom_imports, use_atomic_checkpoints
from mavit_mm.utils.fileio import AtomicLocalBackend, atomic_write
from helpers import ROOT, randomize_

CUDA = torch.cuda.is_available()
# the archs the CUDA tests sweep: tiny by default, all four with --gpu-full (or MAVIT_GPU_TEST_ARCHS=tsbl)
_ARCHS_ENV = os.environ.get('MAVIT_GPU_TEST_ARCHS', '')
GPU_ARCHS = ['t'] + [a if a in _ARCHS_ENV else pytest.param(a, marks=pytest.mark.gpu_full) for a in 'sbl']


# ---------------------------------------------------------------- atomic writes
def test_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / 'ckpt.pth'
    target.write_bytes(b'old complete checkpoint')
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b'half of a new')
            raise RuntimeError('disk full')
    assert target.read_bytes() == b'old complete checkpoint'
    assert os.listdir(tmp_path) == ['ckpt.pth']


def test_sigkill_during_checkpoint_write_never_exposes_a_truncated_file(tmp_path):
    """A writer killed after its bytes hit the temporary file, before the rename: target untouched."""
    target, marker = tmp_path / 'iter_4.pth', tmp_path / 'writing'
    torch.save({'iter': 2}, target)
    child = textwrap.dedent(f"""
        import os, time, torch
        from mmengine.fileio import get_file_backend
        import mavit_mm  # registers 'local_atomic'
        real_fsync = os.fsync
        def slow_fsync(fd):
            open({str(marker)!r}, 'w').close()
            time.sleep(60)
        os.fsync = slow_fsync
        backend = get_file_backend({str(target)!r}, backend_args=dict(backend='local_atomic'))
        import io
        buf = io.BytesIO(); torch.save({{'iter': 4, 'w': torch.randn(1000, 1000)}}, buf)
        backend.put(buf.getvalue(), {str(target)!r})
    """)
    proc = subprocess.Popen([sys.executable, '-c', child], cwd=ROOT)
    try:
        for _ in range(600):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), 'the child never reached the write'
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert torch.load(target, weights_only=True) == {'iter': 2}


def test_checkpoint_hook_gets_the_atomic_backend():
    cfg = Config(dict(work_dir='work_dirs/x', default_hooks=dict(checkpoint=dict(type='CheckpointHook'))))
    use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='local_atomic')
    assert isinstance(get_file_backend('a.pth', backend_args=dict(backend='local_atomic')), AtomicLocalBackend)
    remote = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', out_dir='s3://bucket/'))))
    use_atomic_checkpoints(remote)
    assert 'backend_args' not in remote.default_hooks.checkpoint


# ---------------------------------------------------------------- SIGKILL and --resume
def kill_resume_config(tmp_path, toy_cls_root):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/toy/mavit-t_toy-cls.py'))
    cfg.model.backbone.arch = dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 2, 1], num_heads=[1, 2, 3, 4])
    cfg.model.head.in_channels = 128
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
        cfg[key].dataset.data_root = toy_cls_root
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=10, val_interval=1000)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.randomness = dict(seed=0, deterministic=True)
    path = str(tmp_path / 'kill_resume.py')
    cfg.dump(path)
    return path


def train(config, work_dir, *extra, wait=True):
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir), *extra]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUBLAS_WORKSPACE_CONFIG': ':4096:8'}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def logged_iters(work_dir):
    files = list(work_dir.glob('*/vis_data/scalars.json'))
    lines = files[0].read_text().splitlines() if files else []
    return [json.loads(line)['iter'] for line in lines if line.strip()]


@pytest.fixture(scope='module')
def toy_cls_root(tmp_path_factory):
    from mavit_mm.toy_data import make_toy_dataset
    root = str(tmp_path_factory.mktemp('toy'))
    make_toy_dataset(root, num_train=24, num_val=6, size=64, seed=3)
    return osp.join(root, 'cls')


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path, toy_cls_root):
    config = kill_resume_config(tmp_path, toy_cls_root)
    out = train(config, tmp_path / 'straight')
    assert out.returncode == 0, out.stderr[-3000:]

    killed = tmp_path / 'killed'
    proc = train(config, killed, wait=False)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and max(logged_iters(killed), default=0) < 5 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, 'the run ended before it could be killed'
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    killed_at = max(logged_iters(killed))
    assert 5 <= killed_at < 10 and not (killed / 'iter_10.pth').exists()
    out = train(config, killed, '--resume')
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = re.search(r'resumed epoch: \d+, iter: ([468])', out.stdout + out.stderr)
    assert resumed
    print(f'killed after iteration {killed_at}, resumed from iteration {resumed.group(1)}')

    a = torch.load(tmp_path / 'straight' / 'iter_10.pth', map_location='cpu')
    b = torch.load(killed / 'iter_10.pth', map_location='cpu')
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    losses = {}
    for name in ('straight', 'killed'):
        runs = sorted((tmp_path / name).glob('*/vis_data/scalars.json'))
        entries = [json.loads(line) for line in runs[-1].read_text().splitlines()]
        losses[name] = [e['loss'] for e in entries if e.get('iter') == 10]
    assert losses['straight'] == losses['killed']


# ---------------------------------------------------------------- mixed precision
# tiny, and base for what tiny lacks (head_dim 96 in the MALA stages, layer scales of 1e-6); small and large
# add nothing new here and are the slowest on a CPU without native bf16
@pytest.mark.parametrize('arch', ['t', 'b'])
@pytest.mark.parametrize('scale', [1e-3, 1.0, 1e3])
def test_bf16_autocast_cpu_no_nan_over_magnitudes(arch, scale):
    model = randomize_(MAViT(arch=arch, fast_path='off')).train()
    with torch.no_grad():  # weights over orders of magnitude too
        for name, p in model.named_parameters():
            if 'qkvo' in name or 'proj' in name:
                p.mul_(scale**0.5)
    x = (scale * torch.randn(2, 3, 64, 64)).requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outs)
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not CUDA, reason='fp16 / bf16 autocast on CUDA needs a GPU')
@pytest.mark.parametrize('arch', GPU_ARCHS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('scale', [1e-3, 1.0, 1e2])
@pytest.mark.parametrize('fast_path', ['off', 'auto'])
def test_cuda_autocast_no_nan_over_magnitudes(arch, dtype, scale, fast_path):
    model = randomize_(MAViT(arch=arch, fast_path=fast_path)).cuda().train()
    x = (scale * torch.randn(2, 3, 96, 128, device='cuda')).requires_grad_(True)
    with torch.autocast('cuda', dtype=dtype):
        outs = model(x)
    sum(o.float().pow(2).mean() for o in outs).backward()
    assert all(torch.isfinite(o).all() for o in outs) and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- inputs
@settings(max_examples=12, deadline=None, derandomize=True)
@given(h=st.integers(32, 160), w=st.integers(32, 160), batch=st.integers(1, 3))
def test_any_size_from_32px_and_any_batch(h, w, batch):
    model = MAViT(
        arch=dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2]), fast_path='off').eval()
    with torch.no_grad():
        outs = model(torch.randn(batch, 3, h, w))
    for i, o in enumerate(outs):
        expected = (h, w)
        for _ in range(i + 2):
            expected = tuple((s + 1) // 2 for s in expected)
        assert o.shape == (batch, model.embed_dims[i], *expected) and torch.isfinite(o).all()


def test_training_at_batch_one_on_odd_sizes():
    model = MAViT(arch='tiny', fast_path='off').train()
    outs = model(torch.randn(1, 3, 33, 47))
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('channels', [1, 4])
def test_in_channels_and_pretrained_stem_adaptation(tmp_path, channels):
    rgb = randomize_(MAViT(arch='tiny', fast_path='off')).eval()
    ckpt = tmp_path / 'rgb.pth'
    torch.save({'state_dict': rgb.state_dict()}, ckpt)
    model = MAViT(
        arch='tiny', in_channels=channels, fast_path='off', init_cfg=dict(type='Pretrained',
                                                                          checkpoint=str(ckpt))).eval()
    model.init_weights()
    image = torch.randn(1, 3, 64, 64)
    gray = image.mean(1, keepdim=True)
    with torch.no_grad():
        if channels == 1:  # a gray image seen as 1 channel == the same image as R = G = B
            torch.testing.assert_close(model(gray)[0], rgb(gray.expand(-1, 3, -1, -1))[0], rtol=1e-4, atol=1e-4)
        else:
            out = model(torch.randn(1, 4, 64, 64))
            assert torch.isfinite(out[0]).all()
    with pytest.raises(ValueError, match=f'expects \\(B, {channels}, H, W\\).*in_channels'):
        model(image if channels != 3 else gray)


def test_detector_trains_on_images_without_annotations():
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import DefaultScope

    from mavit_mm.utils.config_tools import build_model
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py'))
    cfg.model.backbone.update(
        init_cfg=None,
        norm_cfg=dict(type='BN'),
        arch=dict(embed_dims=[32, 64, 96, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4]))
    cfg.model.neck.in_channels = [32, 64, 96, 128]
    model = build_model(cfg).train()
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 97, 131), (3, 64, 80)], num_items=[0, 0], with_mask=True)
    with DefaultScope.overwrite_default_scope('mmdet'):
        data = model.data_preprocessor(packed, True)
        losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()


# ---------------------------------------------------------------- errors a user understands
def test_config_without_custom_imports_says_what_to_add(tmp_path):
    path = tmp_path / 'mine.py'
    path.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
                    "model = dict(backbone=dict(_delete_=True, type='MAViT', arch='tiny'),\n"
                    "             neck=dict(in_channels=[64, 128, 256, 512]))\n")
    cfg = Config.fromfile(str(path))
    with pytest.raises(ValueError) as err:
        check_custom_imports(cfg)
    assert "custom_imports = dict(imports=['mavit_mm'], allow_failed_imports=False)" in str(err.value)
    assert 'MAViT' in str(err.value)
    out = subprocess.run([sys.executable, 'tools/train.py', str(path)],
                         cwd=ROOT,
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert out.returncode != 0 and "custom_imports = dict(imports=['mavit_mm']" in out.stderr


def test_nothing_turns_the_weights_only_loader_off():
    offenders = []
    for folder in ('mavit_mm', 'tools', 'configs', 'projects'):
        for dirpath, _, files in os.walk(osp.join(ROOT, folder)):
            for name in files:
                if name.endswith(('.py', '.sh')):
                    text = open(osp.join(dirpath, name)).read()
                    if re.search(
                            r'weights_only\s*=\s*False|environ(\[|\.setdefault\()[\'"]TORCH_FORCE_NO_WEIGHTS|'
                            r'^\s*(export\s+)?TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=', text, re.M):
                        offenders.append(osp.join(dirpath, name))
    assert offenders == []

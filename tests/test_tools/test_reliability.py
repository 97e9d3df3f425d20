"""Reliability of runs: atomic checkpoint writes, SIGKILL + --resume, images without annotations, clear
errors, the weights-only loader. The backbone's own robustness (mixed precision, odd sizes, channels) is in
tests/test_models/test_backbone_inputs.py."""
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
from mmengine.config import Config
from mmengine.fileio import get_file_backend

from mavit_mm.config.run_config import check_custom_imports, use_atomic_checkpoints
from mavit_mm.utils.fileio import AtomicLocalBackend, atomic_write
from helpers import ROOT


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


# ---------------------------------------------------------------- odd inputs to whole models
def test_detector_trains_on_images_without_annotations():
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import DefaultScope

    from mavit_mm.config.run_config import build_model
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

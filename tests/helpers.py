"""Helpers shared by the test layers (``conftest.py`` holds the options, markers and fixtures)."""
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys
import uuid
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import Tensor, nn
from torch.utils.data import Dataset

from mavit_mm import MAViT

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def rel_err(a: Tensor, b: Tensor) -> float:
    """``|a - b| / |b|`` in float64 (Frobenius norms)."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def grad_err(fast: Dict[str, Tensor], ref: Dict[str, Tensor]) -> float:
    """Largest relative gradient error; biases right before a BatchNorm have a zero gradient in
    exact arithmetic (the norm removes them), so there both paths must just stay at rounding noise."""
    assert fast.keys() == ref.keys()
    scale = max(g.norm().item() for g in ref.values())
    errs = []
    for k, g in ref.items():
        if g.norm() < 1e-6 * scale:
            assert fast[k].norm() < 1e-5 * scale, k
        else:
            errs.append(rel_err(fast[k], g))
    return max(errs)


def randomize_(model: nn.Module) -> nn.Module:
    """Give every float parameter and BN statistic non-default values, so nothing is an identity."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('RoPE.angle') or not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith('running_var'):
                t.copy_(0.5 + noise.abs())
            elif name.endswith(('gamma_1', 'gamma_2')) or 'norm' in name and name.endswith('weight'):
                t.copy_(1 + 0.2 * noise)
            else:
                t.add_(0.05 * noise)
    return model


def forward_backward(model: nn.Module, x: Tensor, dtype: Optional[torch.dtype] = None):
    """Outputs (fp32), input gradient and parameter gradients of a fixed weighted loss on ``model(x)``,
    under autocast to ``dtype`` if given."""
    x = x.clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        outs = model(x)
    loss = sum((o.float() * torch.linspace(-1, 1, o.shape[1], device=o.device)[:, None, None]).mean() for o in outs)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return [o.float() for o in outs], x.grad, grads


def run_tool(*args: str, timeout: float = 900, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository root (a tool under tools/), output captured."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def call_tool(path: str, *args: str) -> int:
    """Run the tool at ``path`` (relative to the repository root) in this process, as
    ``python path ARGS`` would; returns its exit status (read its output with pytest's capsys)."""
    import runpy
    saved = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(osp.join(ROOT, path), run_name='__main__')
    except SystemExit as e:
        if isinstance(e.code, str):  # sys.exit('message'): Python prints it to stderr and exits 1
            print(e.code, file=sys.stderr)
            return 1
        return 0 if e.code is None else e.code
    finally:
        sys.argv = saved
    return 0


#: The toy UperNet with nothing that couples the images of a batch or draws random numbers (BN of the backbone
#: in eval mode, GN in the heads, no flip, dropout or drop path): N processes x B images per step train as
#: 1 process x N*B images. Tests append their loaders, optimizer and schedule.
DECOUPLED_SEGMENTOR = f"""
_base_ = '{ROOT}/configs/toy/upernet_mavit-t_toy.py'
gn = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(drop_path_rate=0.0, norm_eval=True),
    decode_head=dict(norm_cfg=gn, dropout_ratio=0.0),
    auxiliary_head=dict(norm_cfg=gn, dropout_ratio=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')]
"""


def free_port() -> int:
    """A TCP port nothing listens on now (for a launch's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch_env(gpu: bool = False, **extra: str) -> dict:
    """The environment of a launch: a free rendezvous port, one OpenMP thread per process, and no visible
    GPU unless ``gpu``; ``extra`` entries are added."""
    env = {**os.environ, 'PORT': str(free_port()), 'OMP_NUM_THREADS': '1', **extra}
    if not gpu:
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def launch_cmd(script: str, *args: str, nproc: int) -> list:
    """``bash tools/dist_train.sh`` / ``dist_test.sh`` with ``nproc`` processes, or for one process the
    tool it calls (``tools/train.py`` / ``test.py``), without the GPUS argument."""
    if nproc > 1:
        return ['bash', osp.join(ROOT, 'tools', script), *args]
    if script == 'dist_test.sh':
        args = args[:2] + args[3:]
    elif script == 'dist_train.sh':
        args = args[:1] + args[2:]
    return [sys.executable, osp.join(ROOT, 'tools', script.replace('dist_', '').replace('.sh', '.py')), *args]


def launch(script: str,
           *args: str,
           nproc: int,
           cwd: str,
           gpu: bool = False,
           env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run :func:`launch_cmd` to its end in ``cwd``; fails the test with the output's tail on a non-zero exit."""
    proc = subprocess.run(
        launch_cmd(script, *args, nproc=nproc),
        cwd=cwd,
        env=env or launch_env(gpu),
        capture_output=True,
        text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def pickled_predictions(path: str, key: str) -> dict:
    """``tools/test.py --out`` results by image file name (or image id): each one's ``key`` field."""
    with open(path, 'rb') as f:
        results = pickle.load(f)
    return {osp.basename(r.get('img_path', str(r.get('img_id')))): r[key] for r in results}


def train_log(work_dir) -> str:
    """The text log of the (only) run in ``work_dir`` (a pathlib.Path)."""
    return next(work_dir.glob('*/*.log')).read_text()


def worst_tensor(a: Dict[str, Tensor], b: Dict[str, Tensor], rtol: float, atol: float) -> Tuple[str, float]:
    """The float tensor of two state dicts furthest from agreement and its difference over the tolerance
    ``rtol |a| + atol sqrt(numel)`` (norms; below 1 agrees)."""
    ratio = {
        k: ((a[k].double() - b[k].double()).norm() / (rtol * a[k].double().norm() + atol * a[k].numel()**0.5)).item()
        for k in a if a[k].is_floating_point()
    }
    worst = max(ratio, key=ratio.get)
    return worst, ratio[worst]


# A tiny MAViT classifier trained by mmengine's Runner on random images: the Runner tests' model.
TOY_ARCH = dict(embed_dims=[16, 32, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4])


class ToyClassifier(BaseModel):

    def __init__(self):
        super().__init__()
        self.backbone = MAViT(arch=TOY_ARCH, out_indices=(3, ), drop_path_rate=0.0)
        self.head = torch.nn.Linear(64, 3)

    def forward(self, inputs, labels=None, mode='loss'):
        logits = self.head(self.backbone(torch.stack(inputs))[0].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, torch.stack(labels)))
        return logits


class ToyImages(Dataset):

    def __len__(self):
        return 12

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 32, 32, generator=g), labels=torch.tensor(i % 3))


def make_runner(work_dir, loader=None, **kwargs):
    """A Runner training :class:`ToyClassifier` for 6 iterations; ``loader``: dataloader settings (default: no
    workers)."""
    # A unique experiment name: two Runners started in the same second would otherwise share
    # mmengine's timestamp-named logger (and log file).
    return Runner(
        model=ToyClassifier(),
        work_dir=str(work_dir),
        experiment_name=f'resume-{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=ToyImages(),
            batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
            **(loader or dict(num_workers=0))),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=3),
        train_cfg=dict(by_epoch=False, max_iters=6),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0, deterministic=True),
        **kwargs)

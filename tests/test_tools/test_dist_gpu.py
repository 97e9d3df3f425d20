"""tools/dist_train.sh and tools/dist_test.sh with 2 processes on the GPUs of this machine (with one GPU both
share it over gloo: ``mavit_mm/config/launch.py``), against ``tools/train.py`` / ``tools/test.py``.

Segmentation, with ``--amp`` and each speed switch: 2 processes x 1 image per step train as 1 process x 2
images. The segmentor variant removes what couples the images of a batch or draws random numbers (BN of the
backbone in eval mode, GN in the heads, no flip, dropout or drop path; SGD, whose update is linear in the
gradient), so DDP's gradient all-reduce is the only difference, and both start from one saved set of weights.
Compared: each iteration's loss (1 process: the loss of both images; 2 processes: the mean of the ranks'),
and the training update ``w_final - w_start`` of every weight, within the AMP tolerance below. Then SIGKILL of
both ranks midway and ``--resume``: the resumed run repeats the killed run's iterations after its checkpoint
(same losses: weights, momentum, data order and loss scale restored) and ends with the weights of an unbroken
run; and the 2-process test predicts what the 1-process test predicts.

Detection (Mask R-CNN with SyncBN in the backbone, as the paper's configs): 2 processes train with ``--amp``,
with and without ``--fast-train`` (both ranks step, one checkpoint); the 2-process test equals the
1-process test. Its training is not compared with 1 process: the RoI samplers draw random numbers per
process and mmdet normalises the losses per process, as on 8 GPUs.
"""
import contextlib
import itertools
import json
import math
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from mavit_mm.toy_data import make_toy_dataset
from helpers import DECOUPLED_SEGMENTOR, ROOT, launch, launch_cmd, launch_env, pickled_predictions, train_log

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
]

ITERS = 6
# fp16 autocast rounds activations and gradients at ~1e-3; a batch of 2 and two batches of 1 pick other
# kernels, so the runs differ by rounding only, and every step carries the previous steps' rounding on
# (training amplifies a difference in the weights: at lr 0.05 the loss difference grew about 3x per step,
# from 4e-6 at the first iteration to 6e-3 at the sixth, on an H100). Tolerances relative to what is
# compared: the update's norm over all weights, each iteration's loss. A wrong split of the batch (a rank's
# gradient not all-reduced, both ranks reading the same image) moves the update by tens of percent.
UPDATE_RTOL = 0.02
LOSS_RTOL = 5e-3
# a resumed run repeats the killed run's iterations after the checkpoint from the same weights, momentum
# and images: their losses differ by one backward's rounding at most. A lost momentum or a wrong image
# changes an iteration's loss by percents.
REPEAT_RTOL = 1e-3

PROBES = """
custom_imports = dict(imports=['mavit_mm', 'run_probes'], allow_failed_imports=False)
custom_hooks = [dict(type='RankLossProbe', out_dir='{probe}')]
"""

SEG_CONFIG = DECOUPLED_SEGMENTOR + """
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
# a static loss scale, as the paper's configs: a dynamic one may skip a step in one run and not the other
# (one image per process has twice the per-image gradient of a batch of two)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', loss_scale=512.0,
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = []
load_from = '{init}'
train_cfg = dict(max_iters={iters}, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={ckpt}))
log_processor = dict(window_size=1)
""" + PROBES

DET_CONFIG = f"""
_base_ = '{ROOT}/configs/toy/mask-rcnn_mavit-t_fpn_toy.py'
model = dict(backbone=dict(init_cfg=None, norm_cfg=dict(type='SyncBN')),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))  # little trained: keep every score, so there is output
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4, by_epoch=False))
log_processor = dict(by_epoch=False)
""" + PROBES


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist_gpu')
    make_toy_dataset(str(root / 'data/toy'), num_train=16, num_val=4, size=96, seed=3)
    return root


def gpu_env() -> dict:
    """A launch on the GPUs that finds ``tests/run_probes.py``."""
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return launch_env(gpu=True, PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get('PYTHONPATH')])))


def seg_config(root, name: str, batch: int, iters: int = ITERS, ckpt: int = ITERS) -> str:
    """A copy of SEG_CONFIG named ``name``, with probes under ``root/probe_<name>``, starting from
    ``root/init.pth`` (the first call writes it: :func:`calibrated_init`)."""
    init = root / 'init.pth'
    text = SEG_CONFIG.replace('{batch}', str(batch)).replace('{init}', str(init)).replace('{iters}', str(iters))
    text = text.replace('{ckpt}', str(ckpt)).replace('{probe}', str(root / f'probe_{name}'))
    (root / f'{name}.py').write_text(text)
    if not init.exists():
        calibrated_init(root, f'{name}.py', init)
    return f'{name}.py'


def calibrated_init(root, config: str, out) -> None:
    """Write the segmentor's weights from seed 0 to ``out``, with the backbone's BN statistics measured on
    the toy training images.

    The backbone's BN is frozen (``norm_eval``). At its initial statistics (mean 0, variance 1) it
    normalises nothing, and the gradients reach ~2e4 (measured in float32). That overflows fp16 at any loss
    scale, so GradScaler would skip every step. With measured statistics the largest gradient is below 1.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from torch.optim.swa_utils import update_bn

    from mavit_mm.config.run_config import build_model
    cfg = Config.fromfile(str(root / config))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    cwd = os.getcwd()
    os.chdir(root)  # the config's data_root is relative
    try:
        with DefaultScope.overwrite_default_scope('mmseg'):
            loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
            images = [model.data_preprocessor(data, True)['inputs'] for data in itertools.islice(loader, 8)]
    finally:
        os.chdir(cwd)
    model.backbone.norm_eval = False  # else the backbone's train() keeps BN in eval mode and nothing is measured
    update_bn(images, model.backbone)  # torch's own: running statistics reset, then averaged over the batches
    model.backbone.norm_eval = True
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, out)


def launch_together(root, *runs: tuple) -> list:
    """Launch every ``(script, nproc, *args)`` of ``runs`` at once in ``root`` (each on its own rendezvous
    port) and wait for all; their outputs in order. Independent runs side by side keep the file's wall time
    down: most of a toy run is process start-up."""
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [
            pool.submit(launch, script, *map(str, args), nproc=nproc, cwd=str(root), env=gpu_env())
            for script, nproc, *args in runs
        ]
        return [f.result() for f in futures]


def predict_with_1_and_2_processes(root, config: str, ckpt: str, name: str) -> None:
    """``dist_test.sh`` of ``ckpt`` with 1 process and with 2, predictions to ``root/<name>1.pkl`` / ``2.pkl``."""
    launch_together(
        root, *[('dist_test.sh', nproc, config, ckpt, nproc, '--work-dir', root / f'{name}{nproc}', '--out',
                 root / f'{name}{nproc}.pkl') for nproc in (1, 2)])


def probe_rows(root, name: str) -> dict:
    """``{rank: [{'iter': i, 'loss': ...}, ...]}`` in the order the RankLossProbe of run ``name`` wrote
    them (a resumed run appends to the killed run's rows)."""
    return {
        int(path.stem[len('losses_rank'):]): [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted((root / f'probe_{name}').glob('losses_rank*.jsonl'))
    }


def rank_losses(root, name: str) -> dict:
    """``{rank: [loss of iteration 1, 2, ...]}`` of run ``name`` (not resumed)."""
    return {
        rank: [r['loss'] for r in sorted(rows, key=lambda r: r['iter'])]
        for rank, rows in probe_rows(root, name).items()
    }


def update_error(start: dict, a: dict, b: dict) -> float:
    """``|(b - start) - (a - start)| / |a - start|`` over every float tensor together: how far run b's
    training update is from run a's."""
    keys = [k for k in start if start[k].is_floating_point()]
    diff = sum(((b[k].double() - a[k].double())**2).sum() for k in keys)
    step = sum(((a[k].double() - start[k].double())**2).sum() for k in keys)
    assert step > 0, 'the weights did not move (under AMP: was every step skipped for inf gradients?)'
    return math.sqrt(diff / step)


def state(path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def assert_shared_gpu_launch(out: subprocess.CompletedProcess, log: str) -> None:
    """A 2-process launch: mmengine's environment lines in the run's log, the tools' choice of process group
    (printed before the Runner starts its log file) in the output."""
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    if torch.cuda.device_count() == 1:
        assert '2 processes share 1 GPU(s): process group gloo' in out.stdout + out.stderr


def process_tree(pid: int) -> list:
    """``pid`` and all its descendants (torchrun starts each rank in a session of its own, so killing
    torchrun's process group leaves the ranks running)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        out.append(stack.pop())
        stack += children.get(out[-1], [])
    return out


def zombie(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except OSError:
        return True


def kill_all(pids: list) -> None:
    """SIGKILL every process of ``pids`` and wait until they are gone (no write of theirs comes later)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 60
    while time.time() < deadline and not all(zombie(pid) for pid in pids):
        time.sleep(0.1)


@pytest.mark.parametrize(
    'switches', [(), ('--fast-train', ), ('--fast-train', '--cuda-graphs', 'train')],
    ids=['amp', 'amp-fast-train', 'amp-fast-train-graphs'])
def test_segmentor_2x1_on_gpu_trains_as_1x2(toy, switches):
    tag = '-'.join(s.strip('-') for s in switches) or 'plain'
    one, two = f'seg1x2_{tag}', f'seg2x1_{tag}'
    runs = [('dist_train.sh', nproc, seg_config(toy, name, batch), nproc, '--work-dir', toy / name, '--no-validate',
             '--amp', *switches) for name, batch, nproc in ((one, 2, 1), (two, 1, 2))]
    out = launch_together(toy, *runs)[1]
    log = train_log(toy / two)
    assert_shared_gpu_launch(out, log)
    if '--cuda-graphs' in switches:
        assert "CUDAGraphHook" in log

    losses1, losses2 = rank_losses(toy, one), rank_losses(toy, two)
    assert sorted(losses2) == [0, 1] and all(len(v) == ITERS for v in losses2.values()), losses2
    mean2 = [(a + b) / 2 for a, b in zip(losses2[0], losses2[1])]
    loss_err = max(abs(a - b) / abs(a) for a, b in zip(losses1[0], mean2))
    err = update_error(
        state(toy / 'init.pth'), state(toy / one / f'iter_{ITERS}.pth'), state(toy / two / f'iter_{ITERS}.pth'))
    print(f'{tag}: losses 1x2 {losses1[0]}, 2x1 mean {mean2}; largest loss difference {loss_err:.2e}, '
          f'update difference {err:.2e}')
    assert loss_err < LOSS_RTOL, (losses1[0], mean2)
    assert err < UPDATE_RTOL, f'2 x 1 images per step differ from 1 x 2 after {ITERS} steps by {err:.3g}'

    if switches:
        return
    # testing: 2 processes predict what 1 process predicts, image by image
    predict_with_1_and_2_processes(toy, f'{two}.py', str(toy / two / f'iter_{ITERS}.pth'), 'seg_test')
    p1 = pickled_predictions(str(toy / 'seg_test1.pkl'), 'pred_sem_seg')
    p2 = pickled_predictions(str(toy / 'seg_test2.pkl'), 'pred_sem_seg')
    assert p1.keys() == p2.keys() and len(p1) == 4
    for name in p1:
        assert torch.equal(p1[name]['data'], p2[name]['data']), name


def test_sigkill_of_both_ranks_then_resume_ends_as_an_unbroken_run(toy):
    iters = 12
    straight = seg_config(toy, 'seg_straight', 1, iters=iters, ckpt=4)
    # the unbroken run beside the one that is killed
    with ThreadPoolExecutor(1) as pool:
        unbroken = pool.submit(
            launch_together, toy,
            ('dist_train.sh', 2, straight, 2, '--work-dir', toy / 'straight', '--no-validate', '--amp'))
        resumed_from = kill_midway_and_resume(toy, iters)
        unbroken.result()

    # each rank's iterations after the checkpoint, once before the kill and once after the resume
    for rank, rows in probe_rows(toy, 'seg_killed').items():
        first, repeat = {}, {}
        for row in rows:
            (repeat if row['iter'] in first else first)[row['iter']] = row['loss']
        assert min(repeat) == resumed_from + 1 and len(repeat) >= 2, (resumed_from, rows)
        worst = max(abs(repeat[i] - first[i]) / abs(first[i]) for i in repeat)
        print(f'rank {rank}: iterations {sorted(repeat)} repeated after the resume, largest loss difference '
              f'{worst:.2e}')
        assert worst < REPEAT_RTOL, (first, repeat)

    # two independent AMP runs of the same launch: rounding, carried on over the steps, as in the 2 x 1 test
    err = update_error(
        state(toy / 'init.pth'), state(toy / 'straight' / f'iter_{iters}.pth'),
        state(toy / 'killed' / f'iter_{iters}.pth'))
    print(f'update difference between the resumed and the unbroken run {err:.2e}')
    assert err < UPDATE_RTOL


def kill_midway_and_resume(toy, iters: int) -> int:
    """Train ``iters`` iterations with 2 processes into ``toy/killed``, SIGKILL every process of the launch
    midway (after iteration 6, with a checkpoint every 4), then ``--resume`` to the end; the iteration
    resumed from."""
    config = seg_config(toy, 'seg_killed', 1, iters=iters, ckpt=4)
    # a slower loop, so that the kill lands midway whatever the GPU's speed
    with open(toy / config, 'a') as f:
        f.write("custom_hooks.append(dict(type='IterDelayProbe', seconds=0.5))\n")
    work = toy / 'killed'
    args = (config, '2', '--work-dir', str(work), '--no-validate', '--amp')
    proc = subprocess.Popen(
        launch_cmd('dist_train.sh', *args, nproc=2),
        cwd=str(toy),
        env=gpu_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and len(rank_losses(toy, 'seg_killed').get(0, [])) < 6:
            time.sleep(0.05)
        assert proc.poll() is None, 'the run ended before it could be killed'
        tree = process_tree(proc.pid)
        assert len(tree) >= 3, f'torchrun and two ranks expected, found processes {tree}'
        kill_all(tree)  # both ranks and torchrun at once, as in a node failure
        proc.wait(60)
    finally:
        if proc.poll() is None:
            kill_all(process_tree(proc.pid))
    killed_at = len(rank_losses(toy, 'seg_killed')[0])
    assert killed_at < iters and not (work / f'iter_{iters}.pth').exists()

    out = launch(*('dist_train.sh', *args, '--resume'), nproc=2, cwd=str(toy), env=gpu_env())
    resumed = re.search(r'resumed epoch: \d+, iter: (\d+)', out.stdout + out.stderr + train_log_latest(work))
    assert resumed and int(resumed.group(1)) in (4, 8), 'the run did not resume from its checkpoint'
    print(f'killed after iteration {killed_at}, resumed from {resumed.group(1)}')
    return int(resumed.group(1))


def train_log_latest(work_dir) -> str:
    logs = sorted(work_dir.glob('*/*.log'))
    return logs[-1].read_text() if logs else ''


def test_detector_two_processes_on_gpu_train_and_test_as_one(toy):
    (toy / 'det.py').write_text(DET_CONFIG.replace('{probe}', str(toy / 'probe_det')))
    (toy / 'det_fast.py').write_text(DET_CONFIG.replace('{probe}', str(toy / 'probe_det_fast')))
    runs = (('det', ()), ('det_fast', ('--fast-train', )))
    outs = launch_together(
        toy, *[('dist_train.sh', 2, f'{name}.py', 2, '--work-dir', toy / name, '--no-validate', '--amp', *switches)
               for name, switches in runs])
    for (name, _), out in zip(runs, outs):
        log = train_log(toy / name)
        assert_shared_gpu_launch(out, log)
        assert 'SyncBN norm config' not in log  # SyncBN stays SyncBN on GPUs
        losses = rank_losses(toy, name)
        assert sorted(losses) == [0, 1] and all(len(v) == 4 and all(map(math.isfinite, v)) for v in losses.values())
        assert sorted(p.name for p in (toy / name).iterdir() if p.suffix == '.pth') == ['iter_4.pth']

    predict_with_1_and_2_processes(toy, 'det_fast.py', str(toy / 'det_fast' / 'iter_4.pth'), 'det_test')
    d1 = pickled_predictions(str(toy / 'det_test1.pkl'), 'pred_instances')
    d2 = pickled_predictions(str(toy / 'det_test2.pkl'), 'pred_instances')
    assert d1.keys() == d2.keys() and len(d1) == 4
    for img, r in d1.items():
        assert len(r['bboxes']) > 0
        assert torch.allclose(torch.as_tensor(r['bboxes']), torch.as_tensor(d2[img]['bboxes']), atol=1e-4), img
        assert torch.allclose(torch.as_tensor(r['scores']), torch.as_tensor(d2[img]['scores']), atol=1e-5), img
        assert torch.equal(torch.as_tensor(r['labels']), torch.as_tensor(d2[img]['labels'])), img

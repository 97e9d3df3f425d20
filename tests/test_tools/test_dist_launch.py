"""tools/dist_train.sh and tools/dist_test.sh with 2 processes on CPUs (gloo), against 1 process.

Training: 2 processes x 2 images give the same weights as 1 process x 4 images when nothing couples the
images of a batch or draws random numbers per process. The segmentor variant below removes exactly those
couplings (BN in eval mode in the backbone, GN in the heads, no flip, no dropout / drop path, SGD, whose
update is linear in the gradient, unlike Adam's, which turns rounding noise in near-zero gradients into
lr-sized steps); DDP's gradient all-reduce is then the only difference. The detector's RoI samplers draw
random numbers per process and its losses are normalised per process, so for it the test checks the
launch (both ranks, one checkpoint) and the distributed test, not equal training.
Testing: the 2-process predictions, gathered by the Runner, equal the 1-process ones image by image.
"""
import pickle

import pytest
import torch

from mavit_mm.config.launch import shared_gpu
from mavit_mm.toy_data import make_toy_dataset
from helpers import DECOUPLED_SEGMENTOR, ROOT, launch, pickled_predictions, train_log, worst_tensor

ITERS = 3
# fp32 rounding of a 2-way all-reduce vs one batch, over ITERS SGD steps, relative to each tensor's norm
# (seen: 2e-6; the conv biases in front of the frozen stem BNs grow to ~3e3 in these steps), plus an rms
# floor for tensors that stay near zero (a norm's bias: 2.6e-5 of a tiny norm seen); a wrong batch split
# moves weights by the order of lr x gradient, ~1e-3 and more
WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-6

SEG_CONFIG = DECOUPLED_SEGMENTOR + f"""
train_dataloader = dict(batch_size={{batch}}, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
param_scheduler = []
train_cfg = dict(max_iters={ITERS}, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={ITERS}))
log_processor = dict(window_size=1)
"""

DET_CONFIG = f"""
_base_ = '{ROOT}/configs/toy/mask-rcnn_mavit-t_fpn_toy.py'
model = dict(backbone=dict(init_cfg=None),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))  # untrained: keep every score, so there is output
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False)
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=1000)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, by_epoch=False))
log_processor = dict(by_epoch=False)
"""


@pytest.mark.parametrize(
    'local_world_size, gpus, expected',
    [
        (8, 8, [None] * 8),  # a GPU per process: mmengine's own NCCL set-up
        (1, 1, [None]),
        (2, 4, [None, None]),  # fewer processes than GPUs
        (2, 1, [0, 0]),  # two processes on one GPU
        (4, 2, [0, 1, 0, 1]),
        (3, 0, [None] * 3),  # no GPU: the CPU path
    ])
def test_processes_that_outnumber_the_gpus_share_them_round_robin(local_world_size, gpus, expected):
    assert [shared_gpu(r, local_world_size, gpus) for r in range(local_world_size)] == expected


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist')
    make_toy_dataset(str(root / 'data/toy'), num_train=16, num_val=4, size=96, seed=3)
    return root


@pytest.mark.slow
def test_segmentor_two_processes_train_as_one_with_the_same_total_batch(toy):
    (toy / 'seg_1x4.py').write_text(SEG_CONFIG.replace('{batch}', '4'))
    (toy / 'seg_2x2.py').write_text(SEG_CONFIG.replace('{batch}', '2'))
    one, two = toy / 'work_seg_1x4', toy / 'work_seg_2x2'
    launch('dist_train.sh', 'seg_1x4.py', '1', '--work-dir', str(one), '--no-validate', nproc=1, cwd=str(toy))
    launch('dist_train.sh', 'seg_2x2.py', '2', '--work-dir', str(two), '--no-validate', nproc=2, cwd=str(toy))

    log = train_log(two)
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    ckpts = sorted(p.name for p in two.iterdir() if p.suffix == '.pth')
    assert ckpts == [f'iter_{ITERS}.pth'], ckpts  # written once, by rank 0 only
    assert not [p for p in two.rglob('*') if p.name.startswith('.') and p.suffix in ('.tmp', '.part')]

    a = torch.load(one / f'iter_{ITERS}.pth', map_location='cpu')['state_dict']
    b = torch.load(two / f'iter_{ITERS}.pth', map_location='cpu')['state_dict']
    worst, ratio = worst_tensor(a, b, WEIGHT_RTOL, WEIGHT_ATOL)
    assert ratio < 1, f'2 x 2 images differ from 1 x 4 after {ITERS} steps: {worst} at {ratio:.3g} x the tolerance'
    # and they trained: every rank took its share (1 process logs the loss of the whole batch)
    assert 'Distributed training: False' in train_log(one)

    # testing: 2 processes predict what 1 process predicts, image by image
    ckpt = str(two / f'iter_{ITERS}.pth')
    launch(
        'dist_test.sh',
        'seg_2x2.py',
        ckpt,
        '2',
        '--work-dir',
        str(toy / 't2'),
        '--out',
        str(toy / 'seg2.pkl'),
        nproc=2,
        cwd=str(toy))
    out1 = launch(
        'dist_test.sh',
        'seg_2x2.py',
        ckpt,
        '1',
        '--work-dir',
        str(toy / 't1'),
        '--out',
        str(toy / 'seg1.pkl'),
        nproc=1,
        cwd=str(toy))
    p1 = pickled_predictions(str(toy / 'seg1.pkl'), 'pred_sem_seg')
    p2 = pickled_predictions(str(toy / 'seg2.pkl'), 'pred_sem_seg')
    assert p1.keys() == p2.keys() and len(p1) == 4
    for name in p1:
        assert torch.equal(p1[name]['data'], p2[name]['data']), name
    assert 'mIoU' in out1.stdout + out1.stderr


@pytest.mark.slow
def test_detector_two_processes_train_and_test(toy):
    (toy / 'det.py').write_text(DET_CONFIG)
    work = toy / 'work_det'
    launch('dist_train.sh', 'det.py', '2', '--work-dir', str(work), '--no-validate', nproc=2, cwd=str(toy))
    log = train_log(work)
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    losses = [line for line in log.splitlines() if 'Iter(train)' in line and ' loss: ' in line]
    assert len(losses) == 2, losses
    ckpts = sorted(p.name for p in work.iterdir() if p.suffix == '.pth')
    assert ckpts == ['iter_2.pth'], ckpts

    ckpt = str(work / 'iter_2.pth')
    out2 = launch(
        'dist_test.sh',
        'det.py',
        ckpt,
        '2',
        '--work-dir',
        str(toy / 'dt2'),
        '--out',
        str(toy / 'det2.pkl'),
        nproc=2,
        cwd=str(toy))
    out1 = launch(
        'dist_test.sh',
        'det.py',
        ckpt,
        '1',
        '--work-dir',
        str(toy / 'dt1'),
        '--out',
        str(toy / 'det1.pkl'),
        nproc=1,
        cwd=str(toy))
    with open(toy / 'det1.pkl', 'rb') as f:
        d1 = {r['img_id']: r['pred_instances'] for r in pickle.load(f)}
    with open(toy / 'det2.pkl', 'rb') as f:
        d2 = {r['img_id']: r['pred_instances'] for r in pickle.load(f)}
    assert d1.keys() == d2.keys() and len(d1) == 4
    for img_id, r in d1.items():
        assert len(r['bboxes']) > 0
        assert torch.allclose(torch.as_tensor(r['bboxes']), torch.as_tensor(d2[img_id]['bboxes']), atol=1e-4)
        assert torch.allclose(torch.as_tensor(r['scores']), torch.as_tensor(d2[img_id]['scores']), atol=1e-5)
        assert list(r['labels']) == list(d2[img_id]['labels'])

    def metric(out):
        line = [ln for ln in (out.stdout + out.stderr).splitlines() if 'coco/bbox_mAP:' in ln][-1]
        return line[line.index('coco/bbox_mAP:'):].split()[1]

    assert metric(out1) == metric(out2)


def test_shared_gpu_launch_gives_mmengine_the_device_as_local_rank(monkeypatch):
    """Rank 1 of 2 on a machine with one GPU: the process is put on cuda:0, the process group is gloo, and
    mmengine's own device lookup (its logger indexes the visible devices with LOCAL_RANK, which failed with
    an IndexError on rank 1) finds that GPU. CUDA and the process group are stood in for: this machine may
    have neither."""
    from mmengine.config import Config
    from mmengine.logging.logger import _get_device_id

    from mavit_mm.config import launch as launch_module
    calls = {}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda d: calls.setdefault('device', d))
    monkeypatch.setattr(launch_module.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(launch_module.dist, 'init_process_group', lambda **kw: calls.setdefault('group', kw))
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    for key, value in dict(LOCAL_RANK='1', LOCAL_WORLD_SIZE='2', RANK='1', WORLD_SIZE='2').items():
        monkeypatch.setenv(key, value)
    cfg = Config(dict(model=dict(type='X')))
    launch_module.prepare_distributed(cfg, 'pytorch')
    assert calls == {'device': 0, 'group': dict(backend='gloo', rank=1, world_size=2)}
    assert cfg.env_cfg.dist_cfg.backend == 'gloo' and 'model_wrapper_cfg' not in cfg
    assert _get_device_id() == 0

"""``tools/train.py --profile``: mmengine's ProfilerHook with the model's parts marked, and the summary of its
trace, against hand-computed intervals and a profiled training run of a small MAViT classifier."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mavit_mm.engine.profiling import (SUMMARY_NAME, TRACE_NAME, add_profiling, format_summary, mark_phases,
                                       summarise_trace)
from helpers import ToyClassifier, make_runner


def _x(name, ts, dur, cat='user_annotation'):
    return dict(ph='X', name=name, cat=cat, ts=ts, dur=dur)


def test_summary_of_a_hand_made_trace():
    trace = dict(traceEvents=[
        _x('ProfilerStep#1', 0, 100),
        _x('ProfilerStep#2', 100, 100),
        _x('phase::backbone', 10, 20),  # step 1: 10-30 with a nested 15-20: 20 us
        _x('phase::backbone', 15, 5),
        _x('phase::backbone', 110, 30),  # step 2: 30 us
        _x('phase::backward', 40, 50),  # 50 us, then 40 us
        _x('phase::backward', 150, 40),
        _x('aten::mm', 12, 3, cat='cpu_op'),
        _x('kernel_a', 5, 20, cat='kernel'),  # step 1: 5-25 and 20-35 overlap: 30 us, plus 95-100: 35 us
        _x('kernel_b', 20, 15, cat='kernel'),
        _x('kernel_c', 95, 25, cat='kernel'),  # crosses into step 2: 100-120, plus 150-160: 30 us
        _x('Memcpy HtoD', 150, 10, cat='gpu_memcpy'),
        _x('cudaLaunchKernel', 12, 1, cat='cuda_runtime'),  # backbone
        _x('cuLaunchKernelEx', 16, 1, cat='cuda_driver'),  # backbone (nested range)
        _x('cudaLaunchKernel', 50, 1, cat='cuda_runtime'),  # backward
        _x('cudaLaunchKernel', 95, 1, cat='cuda_runtime'),  # neither part
        _x('cudaLaunchKernel', 115, 1, cat='cuda_runtime'),  # backbone
        _x('cudaLaunchKernel', 250, 1, cat='cuda_runtime'),  # after the profiled steps
        _x('cudaMemcpyAsync', 60, 1, cat='cuda_runtime'),  # not a launch
        dict(ph='i', name='phase::backbone', ts=70),  # an instant: no duration
        # the GPU timeline's copies of the host's ranges (Kineto, with CUDA activity): not iterations or parts
        _x('ProfilerStep#1', 3, 150, cat='gpu_user_annotation'),
        _x('phase::backbone', 12, 60, cat='gpu_user_annotation'),
    ])
    s = summarise_trace(trace)
    assert s['iterations'] == 2
    assert s['wall_ms'] == pytest.approx(0.1)
    assert s['gpu_busy_ms'] == pytest.approx((35 + 30) / 2 / 1e3)
    assert s['launches'] == pytest.approx((4 + 1) / 2)
    assert s['phases']['backbone'] == pytest.approx(dict(ms=(20 + 30) / 2 / 1e3, launches=1.5))
    assert s['phases']['backward'] == pytest.approx(dict(ms=(50 + 40) / 2 / 1e3, launches=0.5))
    assert s['phases']['other']['ms'] == pytest.approx((200 - 50 - 90) / 2 / 1e3)
    table = format_summary(s)
    assert '| backbone | 0.0 | 25 % | 2 |' in table and '| backward | 0.0 | 45 % | 0 |' in table


def test_a_trace_without_profiler_steps_is_refused():
    with pytest.raises(ValueError, match='ProfilerStep'):
        summarise_trace(dict(traceEvents=[_x('phase::backbone', 0, 10)]))


def test_marked_parts_compute_what_they_computed():
    model = ToyClassifier().eval()
    x = [torch.randn(3, 32, 32) for _ in range(2)]
    with torch.no_grad():
        before = model(x, mode='predict')
        names = mark_phases(model)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            after = model(x, mode='predict')
    assert names == ['data_preprocessor', 'backbone', 'head']
    assert torch.equal(before, after)
    ranges = [e.name for e in prof.events() if e.name.startswith('phase::')]
    assert ranges.count('phase::backbone') == 1 and ranges.count('phase::head') == 1


def _train(work_dir, custom_hooks=()):
    torch.manual_seed(0)  # the model is built before the Runner seeds
    runner = make_runner(work_dir, custom_hooks=list(custom_hooks))
    runner.train()
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def test_profiled_training_run_summarises_each_part_and_changes_nothing(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path / 'profiled')))
    add_profiling(cfg, iters=3, start=2)
    profiler = cfg.custom_hooks[0]
    assert profiler['type'] == 'ProfilerHook' and profiler['schedule'] == dict(wait=1, warmup=1, active=3, repeat=1)
    profiled = _train(cfg.work_dir, cfg.custom_hooks)
    plain = _train(tmp_path / 'plain')
    for k in plain:  # the ranges change no computation: the same weights after 6 iterations
        assert torch.equal(profiled[k], plain[k]), k

    with open(osp.join(cfg.work_dir, TRACE_NAME)) as f:
        steps = [e for e in json.load(f)['traceEvents'] if str(e.get('name', '')).startswith('ProfilerStep#')]
    assert len(steps) == 3  # the active iterations only
    with open(osp.join(cfg.work_dir, SUMMARY_NAME)) as f:
        summary = json.load(f)
    assert summary['iterations'] == 3
    parts = summary['phases']
    assert set(parts) == {'data_preprocessor', 'backbone', 'head', 'backward', 'optimizer', 'other'}
    for name in ('backbone', 'backward', 'optimizer'):
        assert 0 < parts[name]['ms'] < summary['wall_ms'], name
    assert parts['other']['ms'] >= 0
    assert summary['launches'] == 0 and summary['gpu_busy_ms'] == 0  # a CPU run


def test_profiling_needs_an_iteration_before_it():
    with pytest.raises(ValueError, match='at least one iteration'):
        add_profiling(Config(dict(work_dir='w')), iters=3, start=0)


def test_each_process_of_a_launch_profiles_into_its_own_files(monkeypatch):
    files = {}
    for rank in ('0', '3'):
        monkeypatch.setenv('RANK', rank)
        cfg = Config(dict(work_dir='w'))
        add_profiling(cfg, iters=2, start=5)
        profiler, ranges = cfg.custom_hooks
        assert ranges['trace'] == profiler['json_trace_path']
        files[rank] = (profiler['json_trace_path'], ranges['summary'])
    assert files['0'] == (osp.join('w', TRACE_NAME), osp.join('w', SUMMARY_NAME))
    assert files['3'] == (osp.join('w', 'profile_trace_rank3.json'), osp.join('w', 'profile_phases_rank3.json'))

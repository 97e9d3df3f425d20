"""``benchmark.py real-run CONFIG ...``: ``tools/train.py`` and ``tools/test.py`` as a user runs them, on
COCO- / ADE20K-shaped data at the real image sizes.

Each config (mmdet configs on ``DATA/coco``, mmseg ones on ``DATA/ade``, both written by
:func:`mavit_mm.bench_data.make_bench_data` if absent) is trained by ``tools/train.py CONFIG --amp`` plus
each ``--switches`` entry, for ``--iters`` iterations without validation, every iteration logged
unsmoothed, backbone weights from scratch (``init_cfg=None``); its last checkpoint is then tested by
``tools/test.py`` on ``--test-images`` images (batch 1, as the configs test). Per run:

- ``median`` / ``p90``: the logged iteration ``time`` after ``--warmup`` iterations; ``data``: median
  ``data_time``;
- ``cold_s``: what the first ``--warmup`` iterations took beyond as many steady ones (kernel compilation,
  per-size planning, allocator growth), and ``startup_s``: the process's time outside its iterations (start-up,
  and the checkpoint and exit at the end), in parts in ``startup_parts`` (:func:`startup_parts`);
- ``gpu_busy``: the share of the steady iterations' wall time in which a kernel ran on the GPU, from
  ``nvidia-smi``'s utilisation sampled every 200 ms (absent without ``nvidia-smi``);
- ``by_sighting``: the steady iterations split by how often their input shape (the backbone's input,
  logged by ``tools/train.py --log-input-shapes``) had come before: the first time, the second (where
  training graphs capture it) and later, each with its count, median and p90
  (:func:`mavit_mm.engine.input_shapes.split_by_sighting`);
- test: images/s over the images after the first 10, and the first 10 images' mean seconds.

``--out`` also keeps each run's iteration times (``iteration_times_s``, ``data_times_s``), input shapes
(``input_shapes``) and test image times (``test_image_times_s``).

``--profile N``: after the ``--iters`` timed iterations, one more (the profiler's warm-up) and ``N`` profiled
ones (``tools/train.py --profile``, left out of the figures above): per run, the host time and kernel
launches per part of the model and the GPU-busy time per iteration (:mod:`mavit_mm.engine.profiling`), and
torch's table of the ops with the most host time in the run's log.

``--triton-cache DIR``: the Triton kernel cache the runs share (default: a new empty folder, so that the
first run of a model pays its compilation, as on a fresh machine, and later runs reuse it).
``--logs DIR``: where each run's output goes as it is printed (``NAME_SWITCH_train.log`` / ``_test.log``),
so that a run stopped by a time limit still shows how far it got (a later run of the same config and switch
adds ``-2``, ``-3``, ...); each finished row is also printed (and written to ``--out``) before the next run
starts.
"""
import argparse
import contextlib
import datetime
import glob
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

from ...engine.input_shapes import split_by_sighting
from ...engine.profiling import SUMMARY_NAME, format_summary
from ...utils.fileio import write_text_atomic
from ..benchmarking import environment
from ..logs import scalars_files, training_steps
from . import print_env, switch_args

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DEFAULT_CONFIGS = ('configs/mask_rcnn/mask-rcnn_mavit-t_fpn_1x_coco.py',
                   'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
# a logged test iteration: Epoch(test) of mmdet's epoch-based configs, Iter(test) of mmseg's iteration-based ones
# a logged test iteration (with its eta: the run's closing metrics line also states a mean time)
_TEST_TIME = re.compile(r'(?:Epoch|Iter)\(test\)\s*\[\s*(\d+)/\d+\]\s+eta:.*?\btime: ([0-9.]+)')
# a logged training iteration: mmengine's time stamp, then Iter(train) [i/n] or Epoch(train) [e][i/n]
_TRAIN_LINE = re.compile(
    r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - INFO - '
    r'(?:Iter\(train\)|Epoch\(train\)\s*\[\d+\])\s*\[\s*(\d+)/\d+\]', re.M)
_STAMP = '%Y/%m/%d %H:%M:%S'


def train_options(config: str, iters: int) -> List[str]:
    """``--cfg-options`` of a short training run of ``config``'s own loop: ``iters`` iterations (an
    epoch-based loop: one epoch of the first ``2 * iters`` images), a checkpoint at the end, every
    iteration logged unsmoothed, the backbone from scratch (no download: neither its ``init_cfg`` nor the
    model-level ``pretrained`` of mmseg's stock configs)."""
    from mavit_mm.config.run_config import load_config
    cfg = load_config(config)
    opts = ['model.backbone.init_cfg=None', 'default_hooks.logger.interval=1', 'log_processor.window_size=1']
    if cfg.model.get('pretrained'):
        opts.append('model.pretrained=None')
    if 'max_epochs' in cfg.train_cfg:
        batch = cfg.train_dataloader.batch_size
        return opts + [
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1',
            f'train_dataloader.dataset.indices={iters * batch}'
        ]
    return opts + [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters + 1}',
        f'default_hooks.checkpoint.interval={iters}'
    ]


def steady_stats(times: List[float], data_times: List[float], warmup: int) -> Dict[str, float]:
    """Median / p90 of ``times`` after ``warmup`` entries, and what the first ``warmup`` cost beyond that."""
    steady = sorted(times[warmup:])
    if not steady:
        raise ValueError(f'no iteration after the {warmup} warm-up ones: raise --iters')
    median = statistics.median(steady)
    p90 = steady[min(len(steady) - 1, int(round(0.9 * (len(steady) - 1))))]
    return dict(
        median_ms=1e3 * median,
        p90_ms=1e3 * p90,
        data_ms=1e3 * statistics.median(data_times[warmup:]),
        cold_s=sum(times[:warmup]) - warmup * median,
        iters=len(steady))


def format_sighting(split: Dict[str, Dict[str, float]]) -> str:
    """One line of :func:`~mavit_mm.engine.input_shapes.split_by_sighting`'s result."""
    words = {'first': 'at a new input shape', 'second': 'at a shape seen once', 'later': 'at a shape seen more often'}
    parts = [
        f'{g["n"]} {words[k]}: median {g["median_ms"]:.1f} ms, p90 {g["p90_ms"]:.1f} ms' for k, g in split.items()
        if k in words
    ]
    n = split['shapes']['n']
    return f'steady iterations, {n} input shape{"s" if n != 1 else ""} in the run: ' + '; '.join(parts)


def parse_utilisation(text: str) -> List[Tuple[datetime.datetime, float]]:
    """``(time, percent)`` samples from ``nvidia-smi --query-gpu=timestamp,utilization.gpu
    --format=csv,noheader,nounits`` output (lines like ``2026/12/05 09:06:41.123, 87``)."""
    samples = []
    for line in text.splitlines():
        stamp, _, value = line.rpartition(',')
        try:
            samples.append((datetime.datetime.strptime(stamp.strip(), _STAMP + '.%f'), float(value)))
        except ValueError:  # a header, a cut last line, or '[N/A]'
            continue
    return samples


def busy_share(samples: List[Tuple[datetime.datetime, float]],
               log_text: str,
               warmup: int,
               last: Optional[int] = None) -> Optional[float]:
    """Mean GPU utilisation (0-1) over the steady iterations: from the log line of iteration ``warmup`` to
    that of ``last`` (default: the last logged; mmengine stamps whole seconds, so the window is known to a
    second); ``None`` if that window is shorter than 5 s or holds fewer than 5 samples."""
    stamps = {int(i): datetime.datetime.strptime(t, _STAMP) for t, i in _TRAIN_LINE.findall(log_text)}
    if warmup not in stamps:
        return None
    start, end = stamps[warmup], stamps[last] if last in stamps else max(stamps.values())
    inside = [v for t, v in samples if start <= t <= end]
    if (end - start).total_seconds() < 5 or len(inside) < 5:
        return None
    return statistics.fmean(inside) / 100


@contextlib.contextmanager
def sample_utilisation(path: str) -> Iterator[None]:
    """Samples the utilisation of the first visible GPU into ``path`` while the block runs (nothing where
    ``nvidia-smi`` is missing)."""
    visible = os.environ.get('CUDA_VISIBLE_DEVICES', '0').split(',')[0].strip() or '0'
    cmd = [
        'nvidia-smi', '-i', visible, '--query-gpu=timestamp,utilization.gpu', '--format=csv,noheader,nounits', '-lms',
        '200'
    ]
    with open(path, 'w') as f:
        try:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.DEVNULL)
        except OSError:
            proc = None
        try:
            yield
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()


def startup_parts(log_text: str, launch: datetime.datetime, end: datetime.datetime,
                  first_iter_s: float) -> Optional[Dict[str, float]]:
    """Where a training process's time outside its iterations goes, from the run log's dated lines (whole
    seconds, so each part is known to about a second) and the wall-clock ``launch`` / ``end`` of the process:

    - ``to_log_s``: launch to the run log's first line (interpreter, imports, config, the Runner's logger);
    - ``to_first_iter_s``: from there to the start of the first iteration (building the model, its weights,
      the dataloaders and optimizer, the hooks' ``before_run``); the first iteration itself is cold start;
    - ``after_last_iter_s``: the last iteration's line to the process's end (checkpoint, ``after_run``, exit).

    ``None`` where the log has no dated line or no training iteration.
    """
    stamps = re.findall(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - ', log_text, re.M)
    iters = [t for t, _ in _TRAIN_LINE.findall(log_text)]
    if not stamps or not iters:
        return None
    first_log = datetime.datetime.strptime(stamps[0], _STAMP)
    first_iter_end = datetime.datetime.strptime(iters[0], _STAMP)
    last_iter = datetime.datetime.strptime(iters[-1], _STAMP)
    return dict(
        to_log_s=(first_log - launch).total_seconds(),
        to_first_iter_s=(first_iter_end - first_log).total_seconds() - first_iter_s,
        after_last_iter_s=(end - last_iter).total_seconds())


def per_image_times(log_text: str) -> List[float]:
    """Per-image ``time`` of a test run, from the text log (every iteration logged unsmoothed)."""
    return [float(t) for _, t in _TEST_TIME.findall(log_text)]


def _run(cmd: List[str], env: dict, log: str) -> float:
    """Runs ``cmd`` with its output going to ``log`` as it is printed; its wall time in seconds."""
    start = time.perf_counter()
    with open(log, 'w') as f:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        with open(log) as f:
            tail = f.read()[-4000:]
        raise SystemExit(f'benchmark real-run: {" ".join(cmd)} failed (exit {code}, log {log}):\n{tail}')
    return time.perf_counter() - start


def log_stem(logs: str, config: str, switch: str) -> str:
    """Where a run's output goes: ``LOGS/NAME_SWITCH`` (``_train.log``, ``_test.log``, ``_gpu.csv`` appended),
    with ``-2``, ``-3``, ... added where an earlier run of the same config and switch (an invocation sharing
    ``--logs``) left its files, so that no run's log replaces another's."""
    base = osp.join(logs, f'{osp.splitext(osp.basename(config))[0]}_{switch.replace(",", "+").replace("=", "-")}')
    stem, n = base, 1
    while any(osp.exists(stem + suffix) for suffix in ('_train.log', '_test.log', '_gpu.csv')):
        n += 1
        stem = f'{base}-{n}'
    return stem


def brief(row: Dict[str, object]) -> Dict[str, object]:
    """``row`` without its per-iteration and per-image lists (those go to ``--out`` only)."""
    return {k: v for k, v in row.items() if not isinstance(v, list)}


def run_config(config: str, switch: str, args: argparse.Namespace, roots: Dict[str, str], env: dict, logs: str) -> dict:
    from mavit_mm.config.run_config import load_config
    data_root = roots['coco' if load_config(config).get('default_scope') == 'mmdet' else 'ade']
    row: Dict[str, object] = dict(config=config, switch=switch)
    log = log_stem(logs, config, switch)
    profile = getattr(args, 'profile', 0)
    with tempfile.TemporaryDirectory() as work_dir:
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--amp', *switch_args(switch)]
        cmd += ['--no-validate', '--log-input-shapes']
        if profile:
            cmd += ['--profile', str(profile), '--profile-start', str(args.iters + 1)]
        total = args.iters + (1 + profile if profile else 0)
        cmd += ['--work-dir', work_dir, '--data-root', data_root, '--cfg-options', *train_options(config, total)]
        launch = datetime.datetime.now()
        with sample_utilisation(f'{log}_gpu.csv'):
            wall = _run(cmd, env, f'{log}_train.log')
        end = datetime.datetime.now()
        steps = training_steps(scalars_files(work_dir)[-1])
        if profile:
            with open(osp.join(work_dir, SUMMARY_NAME)) as f:
                row['profile'] = json.load(f)
        steps = steps[:args.iters]  # the profiled ones run slower
        times = [d['time'] for d in steps]
        row.update(steady_stats(times, [d['data_time'] for d in steps], args.warmup))
        row['iteration_times_s'] = times
        row['data_times_s'] = [d['data_time'] for d in steps]
        by_sighting = split_by_sighting(steps, args.warmup)
        if by_sighting is not None:
            row['by_sighting'] = by_sighting
            row['input_shapes'] = [[int(d['input_h']), int(d['input_w'])] for d in steps]
        run_log = sorted(glob.glob(osp.join(work_dir, '*', '*.log')), key=osp.getmtime)[-1]  # dated lines
        with open(run_log) as f, open(f'{log}_gpu.csv') as g:
            run_text = f.read()
            share = busy_share(parse_utilisation(g.read()), run_text, args.warmup, args.iters)
        if share is not None:
            row['gpu_busy'] = share
        if not profile:  # the trace's export and summary would count as start-up
            row['startup_s'] = wall - sum(times)  # process start, build, data loading, checkpoint at the end
            parts = startup_parts(run_text, launch, end, times[0])
            if parts is not None:
                row['startup_parts'] = parts
        row['train_wall_s'] = wall
        if args.test_images:
            print(json.dumps(brief(row)), flush=True)  # the training figures, before the test run
            ckpt = sorted(
                glob.glob(osp.join(work_dir, 'iter_*.pth')) + glob.glob(osp.join(work_dir, 'epoch_*.pth')),
                key=osp.getmtime)[-1]
            tcmd = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, ckpt, '--work-dir', work_dir]
            tcmd += ['--data-root', data_root, '--cfg-options', 'default_hooks.logger.interval=1']
            tcmd += ['log_processor.window_size=1', f'test_dataloader.dataset.indices={args.test_images}']
            twall = _run(tcmd, env, f'{log}_test.log')
            logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')), key=osp.getmtime)
            with open(logs[-1]) as f:
                per_image = per_image_times(f.read())
            if len(per_image) > 10:
                row['test_images_per_s'] = 1 / statistics.median(per_image[10:])
            row['test_first10_s'] = statistics.mean(per_image[:10]) if per_image else float('nan')
            row['test_image_times_s'] = per_image
            row['test_wall_s'] = twall
    return row


def run(args: argparse.Namespace) -> dict:
    from mavit_mm.bench_data import make_bench_data
    env_info = environment()
    print_env(env_info)
    roots = make_bench_data(
        args.data, coco_train=max(400, 2 * args.iters), ade_train=100, ade_val=max(100, args.test_images))
    cache = args.triton_cache or tempfile.mkdtemp(prefix='triton-cache-')
    env = dict(os.environ, TRITON_CACHE_DIR=cache, PYTHONUNBUFFERED='1')
    print(f'# Triton cache: {cache}', flush=True)
    logs = args.logs or tempfile.mkdtemp(prefix='real-run-logs-')
    os.makedirs(logs, exist_ok=True)
    print(f"# the runs' logs: {logs}", flush=True)
    rows: List[dict] = []
    for config in args.configs:
        for switch in args.switches:
            rows.append(run_config(config, switch, args, roots, env, logs))
            print(json.dumps(brief(rows[-1])), flush=True)
            if args.out:
                result = dict(env=env_info, iters=args.iters, warmup=args.warmup, rows=rows)
                write_text_atomic(json.dumps(result, indent=2, default=str) + '\n', args.out)
    print('\n| config | command | median ms | p90 ms | data ms | GPU busy | cold s | startup s | test img/s | '
          'test first 10 s |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        name = osp.splitext(osp.basename(str(r['config'])))[0]
        command = ' '.join(['--amp', *switch_args(str(r['switch']))])
        busy = f'{100 * r["gpu_busy"]:.0f} %' if 'gpu_busy' in r else 'n/a'
        startup = r.get('startup_s', float('nan'))
        print(f'| {name} | `{command}` | {r["median_ms"]:.1f} | '
              f'{r["p90_ms"]:.1f} | {r["data_ms"]:.1f} | {busy} | {r["cold_s"]:.1f} | {startup:.1f} | '
              f'{r.get("test_images_per_s", float("nan")):.1f} | {r.get("test_first10_s", float("nan")):.2f} |')
    for r in rows:
        if 'startup_parts' in r:
            p = r['startup_parts']
            name = osp.splitext(osp.basename(str(r['config'])))[0]
            command = ' '.join(['--amp', *switch_args(str(r['switch']))])
            print(f'{name} `{command}` outside the iterations: {p["to_log_s"]:.0f} s to the run log, '
                  f'{p["to_first_iter_s"]:.0f} s more to the first iteration, {p["after_last_iter_s"]:.0f} s after '
                  'the last (+-1 s)')
    for r in rows:
        if 'by_sighting' in r:
            name = osp.splitext(osp.basename(str(r['config'])))[0]
            print(f'{name}: {format_sighting(r["by_sighting"])}')
    for r in rows:
        if 'profile' in r:
            command = ' '.join(['--amp', *switch_args(str(r['switch']))])
            print(f'\n{osp.splitext(osp.basename(str(r["config"])))[0]} `{command}`: {format_summary(r["profile"])}')
    return dict(env=env_info, iters=args.iters, warmup=args.warmup, rows=rows)

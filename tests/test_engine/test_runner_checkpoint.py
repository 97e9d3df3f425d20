"""Runner checkpoints load through torch's weights-only loader with mavit_mm imported: a short
CPU training resumes from its saved iteration; crafted pickles are still refused."""
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

import mavit_mm  # noqa: F401  (registers the allow-list)
from helpers import make_runner


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('run')
    runner = make_runner(work_dir)
    runner.train()
    return work_dir, {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_resume_continues_from_saved_iteration(finished_run, tmp_path):
    work_dir, final = finished_run
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') is None
    resumed = make_runner(tmp_path, resume=True, load_from=str(work_dir / 'iter_3.pth'))
    resumed.train()
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'resumed epoch: 0, iter: 3' in log
    assert re.findall(r'\(train\) (?:\[\d+\])?\[(\d)/6\]', log) == ['4', '5', '6']
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, final[k], msg=k)


def test_without_allow_list_torch_refuses_runner_checkpoint(finished_run):
    """The allow-list is what makes loading work: a process without mavit_mm fails."""
    path = finished_run[0] / 'iter_6.pth'
    code = f'import torch; torch.load({str(path)!r}, map_location="cpu")'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode != 0 and 'Weights only load failed' in out.stderr


def test_loaded_message_hub_is_intact(finished_run):
    ckpt = torch.load(finished_run[0] / 'iter_6.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 6
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() > 0


class _RunsCode:

    def __reduce__(self):
        return (os.system, ('touch pwned', ))


class _WalksGetattr:

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('payload', [_RunsCode(), _WalksGetattr()], ids=['os.system', 'getattr'])
def test_crafted_checkpoint_is_refused(tmp_path, payload, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': payload}, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu')
    assert not (tmp_path / 'pwned').exists()

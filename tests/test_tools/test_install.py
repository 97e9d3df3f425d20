"""The install's moving parts: the wheelhouse for offline hosts, and install.sh's checks.

``test_wheelhouse_installs_into_an_empty_venv_without_an_index`` fills a wheelhouse with
tools/misc/make_wheelhouse.sh (it needs the package index, and skips without one) and installs the stack's
Python packages from it into a new, empty virtual environment with ``--no-index``, as install.sh does offline.
"""
import hashlib
import os
import os.path as osp
import subprocess
import sys
import venv

import pytest

from helpers import ROOT

MMCV_SHA256 = 'd387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f'
PINNED = {'mmengine': '0.10.7', 'mmdet': '3.3.0', 'mmsegmentation': '1.2.2', 'mmpretrain': '1.2.0'}


def index_reachable() -> bool:
    probe = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-q', '-d', '/tmp/.probe-six', 'six'],
                           capture_output=True,
                           timeout=120)
    return probe.returncode == 0


def sh(*cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=1200, **kwargs)
    assert proc.returncode == 0, f'{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.mark.slow
def test_wheelhouse_installs_into_an_empty_venv_without_an_index(tmp_path):
    if not index_reachable():
        pytest.skip('no package index reachable: the wheelhouse is filled from one')
    house = tmp_path / 'wheelhouse'
    sh('bash',
       osp.join(ROOT, 'tools/misc/make_wheelhouse.sh'),
       str(house),
       env={
           **os.environ, 'PYTHON': sys.executable
       })
    sdist = house / 'mmcv-2.1.0.tar.gz'
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == MMCV_SHA256
    names = {f.name.split('-')[0].lower() for f in house.glob('*.whl')}
    assert {'setuptools', 'wheel', 'ninja', 'opencv_python_headless', 'mmdet', 'pycocotools'} <= names
    assert 'torch' not in names  # only with --with-torch

    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / 'bin' / 'python')
    offline = [py, '-m', 'pip', 'install', '--no-index', '--find-links', str(house)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}  # no index, no find-links of ours
    clean['PIP_CONFIG_FILE'] = os.devnull
    # every requirement and its dependencies resolve from the folder alone (what install.sh --wheelhouse asks)
    plan = sh(
        *offline,
        '--dry-run',
        '-r',
        osp.join(ROOT, 'requirements.txt'),
        '-r',
        osp.join(ROOT, 'requirements/build.txt'),
        'opencv-python-headless',
        env=clean).stdout
    assert 'Would install' in plan and 'pycocotools' in plan and 'scipy' in plan
    # and install: the build tools and the pinned stack (the large numeric wheels only resolve above)
    sh(*offline, '-r', osp.join(ROOT, 'requirements/build.txt'), env=clean)
    sh(*offline, '--no-deps', '-r', osp.join(ROOT, 'requirements/openmmlab.txt'), env=clean)
    out = sh(
        py,
        '-c',
        'import pkg_resources\n'  # setuptools < 82, as mmcv's setup.py needs
        'from importlib.metadata import version\n'
        'print(*(f"{n}={version(n)}" for n in ("mmengine", "mmdet", "mmsegmentation", "mmpretrain")))',
        env=clean).stdout.split()
    assert dict(item.split('=') for item in out) == PINNED


def test_install_script_refuses_a_missing_wheelhouse_and_unknown_arguments():
    script = osp.join(ROOT, 'tools/install.sh')
    out = subprocess.run(['bash', script, '--wheelhouse', '/nonexistent/dir'], capture_output=True, text=True)
    assert out.returncode == 2 and 'needs an existing folder' in out.stderr
    out = subprocess.run(['bash', script, '--bogus'], capture_output=True, text=True)
    assert out.returncode == 2 and 'unknown argument' in out.stderr


def test_install_script_names_the_failing_step_and_its_fix(tmp_path):
    """No torch and no reachable index: the step and the fix are printed, not a bare pip error."""
    (tmp_path / 'torch.py').write_text('raise ImportError("hidden by the test")\n')  # shadows the real torch
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    env.update(
        PYTHONPATH=str(tmp_path),
        PIP_NO_INDEX='1',
        PIP_CONFIG_FILE=os.devnull,
        PYTHON=sys.executable,
        PIP_BREAK_SYSTEM_PACKAGES='1')
    out = subprocess.run(['bash', osp.join(ROOT, 'tools/install.sh')],
                         capture_output=True,
                         text=True,
                         env=env,
                         timeout=300)
    assert out.returncode != 0
    assert 'no torch found' in out.stdout, out.stdout + out.stderr
    assert 'FAILED in step 1 (torch)' in out.stderr and 'install torch for your platform' in out.stderr

"""What a failed download leaves under a checkpoint's name gets a message naming the file and the fix,
from the backbone's Pretrained init and from tools/test.py, instead of torch's zip or unpickling errors."""
import re

import pytest
import torch

from mavit_mm import MAViT
from mavit_mm.utils.checkpoint_file import CheckpointFileError, check_checkpoint_file
from helpers import call_tool


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'good.pth'
    torch.save({'state_dict': MAViT(arch='tiny').state_dict()}, path)
    return path


def _bad_files(good, folder):
    data = good.read_bytes()
    files = {
        'truncated': (data[:len(data) // 2], 'is a truncated or damaged checkpoint'),
        'empty': (b'', 'is empty (0 bytes)'),
        'html': (b'<!DOCTYPE html><html><body>404 Not Found</body></html>', 'a text / HTML page'),
        'lfs': (b'version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n', 'a git-lfs pointer'),
        'other': (b'\x00\x01garbage' * 10, 'is not a torch checkpoint'),
    }
    out = {}
    for name, (content, message) in files.items():
        path = folder / f'{name}.pth'
        path.write_bytes(content)
        out[name] = (path, message)
    return out


def test_good_checkpoint_passes_and_bad_ones_are_named(good, tmp_path):
    check_checkpoint_file(str(good))
    for name, (path, message) in _bad_files(good, tmp_path).items():
        with pytest.raises(CheckpointFileError, match=re.escape(message)) as info:
            check_checkpoint_file(str(path))
        assert str(path) in str(info.value) and 'download (or copy) it again' in str(info.value), name
    # the raw errors these replace: torch itself on the truncated file and on the HTML page
    with pytest.raises(Exception, match='zip archive|central directory'):
        torch.load(tmp_path / 'truncated.pth', weights_only=True)


def test_pretrained_init_reports_the_bad_file(good, tmp_path):
    path, message = _bad_files(good, tmp_path)['html']
    model = MAViT(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointFileError, match=re.escape(message)):
        model.init_weights()


def test_test_tool_reports_the_bad_file(good, tmp_path):
    path, message = _bad_files(good, tmp_path)['truncated']
    with pytest.raises(CheckpointFileError, match=re.escape(message)):
        call_tool('tools/test.py', 'configs/toy/upernet_mavit-t_toy.py', str(path))

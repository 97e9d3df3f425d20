"""Writing files so that an interruption never leaves a half-written one.

Everything goes to a temporary name in the target's folder, is flushed to disk, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows): a reader sees the old file or the
whole new one, never a truncated one.

:class:`AtomicLocalBackend` brings this to mmengine's checkpoint writing. Runner checkpoints go
through ``mmengine.fileio`` backends, whose stock ``LocalBackend.put`` opens the target itself;
``CheckpointHook(backend_args=dict(backend='local_atomic'))`` selects this one instead (our
``tools/train.py`` does so for local work dirs), which also covers the ``last_checkpoint`` pointer
that ``--resume`` reads.
"""
import contextlib
import os
import os.path as osp
from typing import BinaryIO, Iterator, Union

import torch
from mmengine.fileio import LocalBackend, register_backend


@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = osp.join(osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def save_atomic(obj: object, path: Union[str, os.PathLike]) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def write_text_atomic(text: str, path: Union[str, os.PathLike]) -> None:
    """Write ``text`` (utf-8) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as f:
        f.write(text.encode('utf-8'))


@register_backend('local_atomic')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (temporary file, then rename)."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        with atomic_write(filepath) as f:
            f.write(obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike], encoding: str = 'utf-8') -> None:
        with atomic_write(filepath) as f:
            f.write(obj.encode(encoding))

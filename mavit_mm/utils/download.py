"""Downloading a checkpoint so that nothing half-written ever has its final name: ``tools/misc/download_weights.py``.

The bytes go to ``DEST.part`` (resumed with an HTTP ``Range`` request when a ``.part`` is there and the
server honours it); the file is checked (complete size, a whole torch checkpoint, the SHA-256 when one is
known, the MAViT arch when one is expected) and only then renamed to ``DEST``.
"""
import hashlib
import os
import os.path as osp
import urllib.error
import urllib.request
from typing import Callable, Optional

from .checkpoint_file import CheckpointFileError, check_checkpoint_file

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that did not give a usable checkpoint; the message says what to do."""


def sha256sum(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK), b''):
            h.update(block)
    return h.hexdigest()


def _progress(total: Optional[int], done: int, name: str):
    """A rich progress bar over bytes and its advance function."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
    bar = Progress(TextColumn(name), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    task = bar.add_task(name, total=total, completed=done)
    return bar, lambda n: bar.update(task, advance=n)


def download(url: str,
             dest: str,
             sha256: Optional[str] = None,
             check: Optional[Callable[[str], None]] = None,
             timeout: float = 30.0,
             progress: bool = True) -> str:
    """Fetch ``url`` to ``dest``, resuming ``dest + '.part'``; returns the file's SHA-256.

    Args:
        sha256: the expected hex digest, if known.
        check: called with the complete ``.part`` path before the rename; raises to refuse the file.

    Raises:
        DownloadError: the server cannot be reached (the ``.part`` is kept), the transfer stopped early
            (kept: run again to resume), or the file is complete but wrong (hash, not a checkpoint, other
            arch: removed).
    """
    part = dest + '.part'
    os.makedirs(osp.dirname(osp.abspath(dest)), exist_ok=True)
    have = osp.getsize(part) if osp.exists(part) else 0
    request = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already whole: check it below
            response = None
        else:
            raise DownloadError(f'{url}: HTTP {e.code} {e.reason}; check the URL') from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, 'reason', e)
        raise DownloadError(f'cannot reach {url} ({reason}): no network here? Download it on a machine that '
                            f'has one and put it at {dest}' +
                            (f' (a partial {part} is kept)' if have else '')) from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                have = 0  # the server ignored the Range: start over
            length = response.headers.get('Content-Length')
            total = have + int(length) if length is not None else None
            bar, advance = _progress(total, have, osp.basename(dest)) if progress else (None, lambda n: None)
            got = have
            try:
                if bar is not None:
                    bar.start()
                with open(part, 'ab' if resumed else 'wb') as f:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        got += len(block)
                        advance(len(block))
            except OSError as e:
                raise DownloadError(f'{url}: the transfer stopped after {got} bytes ({e}); run the same command '
                                    f'again to resume from {part}') from None
            finally:
                if bar is not None:
                    bar.stop()
        if total is not None and got < total:
            raise DownloadError(f'{url}: the transfer stopped after {got} of {total} bytes; run the same command '
                                f'again to resume from {part}')
    digest = sha256sum(part)
    try:
        if sha256 and digest != sha256.lower():
            raise DownloadError(f'{url}: SHA-256 {digest} is not the expected {sha256}: a different or damaged '
                                'file; it was removed, download it again (or check the recorded hash)')
        try:
            check_checkpoint_file(part)
        except CheckpointFileError as e:
            raise DownloadError(f'{url}: {e}') from None
        if check is not None:
            check(part)
    except DownloadError:
        os.remove(part)
        raise
    except Exception as e:  # the caller's check refused it
        os.remove(part)
        raise DownloadError(f'{url}: {e} (the download was removed)') from None
    os.replace(part, dest)
    return digest

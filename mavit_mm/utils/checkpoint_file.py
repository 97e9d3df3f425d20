"""A look at a checkpoint file before torch reads it, so that what a failed download leaves behind gets a
message that names the file and the fix instead of torch's ``PytorchStreamReader failed reading zip
archive`` or an unpickler's ``KeyError: 101``."""
import os
import os.path as osp
import zipfile

# the first bytes torch.save writes: a zip archive (torch >= 1.6) or a bare pickle (older files)
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_MAGIC = b'\x80'


class CheckpointFileError(ValueError):
    """A checkpoint file that is not a complete torch checkpoint."""


def check_checkpoint_file(path: str) -> None:
    """Raise :class:`CheckpointFileError` if ``path`` is not a complete torch checkpoint.

    Recognises an empty file, a text file saved under a checkpoint's name (an HTML error page of a
    download, a git-lfs pointer) and a truncated zip archive (an interrupted download). URLs and
    paths that do not exist are left to the loader.
    """
    if '://' in path or not osp.isfile(path):
        return
    size = os.path.getsize(path)
    redownload = 'download (or copy) it again'
    if size == 0:
        raise CheckpointFileError(f'{path} is empty (0 bytes): an interrupted download or copy; {redownload}.')
    with open(path, 'rb') as f:
        head = f.read(512)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointFileError(
                f'{path} is a truncated or damaged checkpoint ({size} bytes; the zip archive torch writes is '
                f'incomplete: {e}); {redownload}.') from None
        return
    if head.startswith(_PICKLE_MAGIC):
        return  # a checkpoint of torch < 1.6 (a bare pickle): torch reads or rejects it itself
    text = head.lstrip().lower()
    if text.startswith((b'<!doctype', b'<html', b'<?xml', b'{', b'version https://git-lfs')):
        kind = 'a git-lfs pointer' if b'git-lfs' in text else 'a text / HTML page (a download error page?)'
        raise CheckpointFileError(f'{path} is not a checkpoint but {kind}, {size} bytes starting with '
                                  f'{head[:60]!r}; {redownload}, or check the URL.')
    raise CheckpointFileError(f'{path} is not a torch checkpoint (it starts with {head[:16]!r}, not a zip archive '
                              f'or a pickle): the wrong file? {redownload}.')

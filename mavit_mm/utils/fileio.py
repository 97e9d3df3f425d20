"""Writing files so that an interruption never leaves a half-written one."""
import os
import os.path as osp

import torch


def save_atomic(obj: object, path: str) -> None:
    """``torch.save`` to a temporary name in the same folder, then rename over ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)

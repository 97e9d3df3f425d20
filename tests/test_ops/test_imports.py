"""The layering of the package: each module of the former import circle imports alone in a fresh
interpreter, and ``mavit_mm.ops`` never imports from the layers above it (models, engine, ...)."""
import ast
import glob
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest

from helpers import ROOT

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton is not installed')
# the modules of the former circle (layer -> fast path -> kernels -> layer) and the engine's graphs
MODULES = [
    'mavit_mm.ops.mala',
    pytest.param('mavit_mm.ops.mala.triton', marks=needs_triton), 'mavit_mm.models.layers.mala',
    'mavit_mm.engine.cuda_graphs'
]


@pytest.mark.parametrize('module', MODULES)
def test_module_imports_alone(module):
    proc = subprocess.run([sys.executable, '-c', f'import {module}'],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ops_import_only_torch_triton_and_ops():
    """Third-party imports of ``mavit_mm.ops``: torch and Triton, nothing else (the standard library is free)."""
    allowed_roots = {'torch', 'triton', *sys.stdlib_module_names}
    bad = []
    for path in glob.glob(osp.join(ROOT, 'mavit_mm', 'ops', '**', '*.py'), recursive=True):
        package = osp.relpath(osp.dirname(path), ROOT).replace(osp.sep, '.')
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split('.')
                target = '.'.join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                names = [target]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                root = name.split('.')[0]
                if not (name.startswith('mavit_mm.ops') or root in allowed_roots):
                    bad.append(f'{osp.relpath(path, ROOT)}: {name}')
    assert not bad, bad

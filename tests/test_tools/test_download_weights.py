"""tools/misc/download_weights.py against a local HTTP server: a good download, a resumed one, a hash mismatch,
another arch, an HTML page, no network. Nothing but a checked checkpoint may ever have the final name."""
import http.server
import io
import os
import threading

import pytest
import torch

from mavit_mm import MAViT
from helpers import call_tool

TOOL = 'tools/misc/download_weights.py'
NAME = 'mavit-t_8xb128_in1k'


def fake_checkpoint(arch: str, **extra) -> bytes:
    """A small file holding the keys the arch check reads (one ``pos`` tensor per block)."""
    setting = MAViT.arch_zoo[arch]
    state = dict(
        extra, **{
            f'layers.{i}.blocks.{j}.pos.weight': torch.zeros(w)
            for i, (w, d) in enumerate(zip(setting['embed_dims'], setting['depths']))
            for j in range(d)
        })
    buf = io.BytesIO()
    torch.save({'model': state}, buf)
    return buf.getvalue()


class Server:
    """Serves ``files`` (path -> bytes) with Range support; ``cut`` bytes: stop that early once."""

    def __init__(self):
        self.files, self.cut, self.ranges = {}, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):

            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get('Range'):
                    server.ranges.append(self.headers['Range'])
                    start = int(self.headers['Range'].split('=')[1].split('-')[0])
                self.send_response(206 if start else 200)
                self.send_header('Content-Length', str(len(body) - start))
                self.end_headers()
                if server.cut is not None:
                    self.wfile.write(body[start:server.cut])
                    server.cut = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def _get(tmp_path, url, *extra):
    return call_tool(TOOL, NAME, '--url', url, '--dir', str(tmp_path), '--quiet', *extra)


def test_download_checks_then_names_and_records_the_hash(server, tmp_path, capsys):
    server.files['/t.pth'] = body = fake_checkpoint('tiny')
    assert _get(tmp_path, server.url + '/t.pth', '--record-hash') == 0
    dest = tmp_path / 'mavit-t_in1k.pth'  # where the dense configs look
    assert dest.read_bytes() == body and not (tmp_path / 'mavit-t_in1k.pth.part').exists()
    import hashlib
    digest = hashlib.sha256(body).hexdigest()
    assert (tmp_path / 'mavit-t_in1k.pth.sha256').read_text() == f'{digest}  mavit-t_in1k.pth\n'
    assert 'dense configs of MAViT-t read it' in capsys.readouterr().out
    # the recorded hash guards the next download: another file under that URL is refused and removed
    server.files['/t.pth'] = fake_checkpoint('tiny', other=torch.ones(1))
    assert _get(tmp_path, server.url + '/t.pth', '--force') == 1
    assert f'is not the expected {digest}' in capsys.readouterr().err
    assert dest.read_bytes() == body and not (tmp_path / 'mavit-t_in1k.pth.part').exists()


def test_an_interrupted_download_resumes(server, tmp_path, capsys):
    server.files['/t.pth'] = body = fake_checkpoint('tiny')
    server.cut = len(body) // 3
    assert _get(tmp_path, server.url + '/t.pth') == 1
    assert 'run the same command again to resume' in capsys.readouterr().err
    part = tmp_path / 'mavit-t_in1k.pth.part'
    assert part.stat().st_size == len(body) // 3 and not (tmp_path / 'mavit-t_in1k.pth').exists()
    assert _get(tmp_path, server.url + '/t.pth') == 0
    assert server.ranges == [f'bytes={len(body) // 3}-']  # only the rest was asked for
    assert (tmp_path / 'mavit-t_in1k.pth').read_bytes() == body and not part.exists()


@pytest.mark.parametrize('served, message', [
    (lambda: fake_checkpoint('small'), "holds MAViT-small weights (widths [64, 128, 320, 512]"),
    (lambda: b'<!DOCTYPE html><html>Access denied</html>', 'not a checkpoint but a text / HTML page'),
])
def test_a_wrong_file_is_refused_and_removed(server, tmp_path, capsys, served, message):
    server.files['/x.pth'] = served()
    assert _get(tmp_path, server.url + '/x.pth') == 1
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_no_network_and_unknown_names(tmp_path, capsys):
    assert _get(tmp_path, 'http://127.0.0.1:9/t.pth') == 1  # the discard port: nothing listens
    assert 'cannot reach http://127.0.0.1:9/t.pth' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    assert call_tool(TOOL, 'mavit-q_in1k', '--dir', str(tmp_path)) == 1
    assert "unknown model 'mavit-q_in1k'" in capsys.readouterr().err
    assert call_tool(TOOL, NAME, '--dir', str(tmp_path)) == 1
    assert f'no Weights URL is recorded for {NAME}' in capsys.readouterr().err
    assert call_tool(TOOL, '--list') == 0
    assert 'mask-rcnn_mavit-t_fpn_1x_coco' in capsys.readouterr().out

"""Put a MAViT backbone into any mmdet / mmseg config: the logic behind ``tools/misc/swap_backbone.py``.

The stock backbone is built (no weights) and run on a small image (on the meta device where it can: shapes
only) to learn the stride and channels of each map it outputs; MAViT's stage for each is the one of the
same stride, so the stock numbering (ResNet's, CSPDarknet's stem-inclusive one, HRNet's branches) does not
matter. The data preprocessor gets the normalisation of MAViT's checkpoints where the stock one differs
(caffe-style BGR configs). Every ``in_channels`` (and DeepLabV3+'s ``c1_in_channels``) of the modules that
read the backbone directly (the neck if there is one, else the heads) is then mapped value by value: a
stock output's width becomes the width of MAViT's stage of the same stride. Modules behind a neck (RPN,
RoI heads, decode heads after an FPN) keep theirs.
"""
import contextlib
import copy
import importlib
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mavit_mm.models.backbones.mavit import MAViT

# Keys that carry backbone channels in the modules reading the backbone.
CHANNEL_KEYS = ('in_channels', 'c1_in_channels')
# Where the backbone's features go when the model has no neck.
HEAD_KEYS = ('decode_head', 'auxiliary_head', 'panoptic_head', 'bbox_head', 'mask_head')
NO_DECAY_KEYS = {'norm': dict(decay_mult=0.0), 'gamma_': dict(decay_mult=0.0)}

# MAViT's stages by output stride
MAVIT_STRIDES = {4: 0, 8: 1, 16: 2, 32: 3}
# the normalisation of MAViT's ImageNet checkpoints (RGB, ImageNet mean / std on 0-255 pixels)
MAVIT_PREPROCESS = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
PROBE_SIZE = 256


def stock_outputs(cfg: Config) -> List[Tuple[int, int]]:
    """``[(stride, channels)]`` of each map the config's own backbone outputs, in order, measured by a
    forward of a ``PROBE_SIZE`` image (or the backbone's own ``img_size``): on the meta device (shapes
    only, no arithmetic: a ViT-L probe costs nothing), or on the CPU where the backbone needs values
    (data-dependent branches) or ops without meta kernels (mmcv's)."""
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.pop('pretrained', None)
    scope = cfg.get('default_scope', 'mmdet')
    size = backbone_cfg.get('img_size', PROBE_SIZE)
    size = size if isinstance(size, int) else size[0]
    shape = (1, backbone_cfg.get('in_channels', 3), size, size)
    with DefaultScope.overwrite_default_scope(scope):
        models = importlib.import_module(f'{scope}.registry').MODELS
        try:  # built on the meta device, a big backbone skips its random initialisation (seconds on a CPU)
            with torch.device('meta'):
                backbone = models.build(backbone_cfg)
        except Exception:  # noqa: BLE001  (an __init__ that needs values, e.g. .item(): built as usual)
            backbone = models.build(backbone_cfg)
        outs = _probe(backbone, shape, 'meta')
        if outs is None:
            outs = _probe(models.build(backbone_cfg), shape, 'cpu', raise_errors=True)
    if isinstance(outs, torch.Tensor):
        raise ValueError(f'the stock backbone {backbone_cfg.type} returns one tensor, not a tuple of maps: its '
                         'heads read it as such (real-time networks such as DDRNet / PIDNet, whose heads take the '
                         "backbone's own branches); there is no feature pyramid to map MAViT's stages to")
    outs = list(outs)
    if not all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in outs):
        raise ValueError(f'the stock backbone {backbone_cfg.type} does not output (B, C, H, W) maps: there is '
                         'nothing to map MAViT stages to; edit the config by hand')
    return [(size // int(o.shape[-1]), int(o.shape[1])) for o in outs]


@contextlib.contextmanager
def _shape_only_batch_norm() -> Iterator[None]:
    """``F.batch_norm`` of a meta tensor as a copy of it while the block runs (of any other tensor as before):
    on the meta device only the shape of its output matters, which is its input's, and meta tensors run
    BatchNorm as Python decompositions (milliseconds a call; an HRNet makes hundreds)."""
    batch_norm = F.batch_norm
    F.batch_norm = lambda input, *args, **kwargs: (
        input.clone() if input.is_meta else batch_norm(input, *args, **kwargs))
    try:
        yield
    finally:
        F.batch_norm = batch_norm


def _probe(backbone: torch.nn.Module, shape: Tuple[int, ...], device: str, raise_errors: bool = False) -> Any:
    """The eval-mode outputs of ``backbone`` on a zero image of ``shape``, on ``device`` (the module is moved
    there); None if it fails and not ``raise_errors``."""
    try:
        backbone.to(device)
        backbone.eval()  # (not chained: some OpenMMLab backbones' train() returns None)
        with torch.no_grad(), _shape_only_batch_norm() if device == 'meta' else contextlib.nullcontext():
            return backbone(torch.zeros(shape, device=device))
    except Exception:  # noqa: BLE001  (on meta: the CPU probe decides)
        if raise_errors:
            raise
        return None


def mavit_indices(strides: Sequence[int], backbone_cfg: Dict[str, Any]) -> Tuple[int, ...]:
    """MAViT's stage for each stock output, by output stride (whatever the stock backbone's numbering),
    or a ``ValueError`` that says why there is none.

    A dilated backbone (ResNet-D8's strides 4, 8, 8, 8) maps stage for stage, by its ``out_indices``: MAViT
    has no dilation, so its heads then read strides 4-32 (as the release's segmentation configs do).
    """
    kind = backbone_cfg.get('type')
    if len(set(strides)) == 1 and len(strides) > 1:
        raise ValueError(f'the stock backbone {kind} outputs all its maps at stride {strides[0]}: a single-scale '
                         "(ViT-style) backbone has no stride pyramid to map MAViT's stages to; start from a "
                         'multi-scale config of the same model, or set --out-indices and the neck by hand')
    if len(set(strides)) != len(strides):
        stock = backbone_cfg.get('out_indices', tuple(range(len(strides))))
        stock = (stock, ) if isinstance(stock, int) else tuple(stock)
        if sorted(strides) == list(strides) and all(0 <= i < 4 for i in stock) and len(stock) == len(strides):
            return stock  # dilated: stage for stage
        raise ValueError(f'the stock backbone {kind} outputs maps at strides {list(strides)}: not one map per '
                         'stride; set --out-indices and the neck by hand')
    unknown = [s for s in strides if s not in MAVIT_STRIDES]
    if unknown:
        raise ValueError(f'the stock backbone {kind} outputs maps at stride(s) {unknown}; MAViT has stages at '
                         f'strides {sorted(MAVIT_STRIDES)} only: drop those levels from the config (or let the '
                         'neck make them, as FPN does with add_extra_convs)')
    return tuple(MAVIT_STRIDES[s] for s in strides)


def needs_mavit_preprocess(stock: Dict[str, Any]) -> bool:
    """Whether the stock data preprocessor normalises differently from MAViT's checkpoints."""
    for key, value in MAVIT_PREPROCESS.items():
        got = stock.get(key)
        if isinstance(value, list):
            if got is None or [float(v) for v in got] != value:
                return True
        elif bool(got) != value:
            return True
    return False


def _map_channels(value: Any, by_channels: Dict[int, int], where: str) -> Any:
    if isinstance(value, int):
        if value not in by_channels:
            raise ValueError(f'{where} = {value} is none of the stock backbone\'s stage widths '
                             f'{sorted(by_channels)}: edit it by hand')
        return by_channels[value]
    return type(value)(_map_channels(v, by_channels, where) for v in value)  # JPU asserts a tuple


def _channel_override(name: str, part: Dict[str, Any], by_channels: Dict[int, int]) -> Dict[str, Any]:
    """The reader's channel keys with MAViT's widths; a head without any that wraps one (K-Net's
    ``IterativeDecodeHead`` around its ``kernel_generate_head``) gets the wrapped head's."""
    override = {key: _map_channels(part[key], by_channels, f'{name}.{key}') for key in CHANNEL_KEYS if key in part}
    if part.get('num_convs') == 0 and 'in_channels' in override and part.get('channels') == part['in_channels']:
        # a head without convs classifies its input as is (Segmenter's FCNHead asserts channels == in_channels)
        override['channels'] = override['in_channels']
    if not override:
        for child, value in part.items():
            if isinstance(value, dict) and any(key in value for key in CHANNEL_KEYS):
                override[child] = _channel_override(f'{name}.{child}', value, by_channels)
    return override


def _check_pass_through(name: str, part: Dict[str, Any], override: Dict[str, Any]) -> None:
    """Refuse a reader that hands the backbone's maps on unchanged (SSD's neck: ``out_channels`` starts
    with its ``in_channels``): what reads it would need MAViT's widths too."""
    out = part.get('out_channels')
    stock = part.get('in_channels')
    if isinstance(out, (list, tuple)) and isinstance(stock, (list, tuple)) and \
            list(out[:len(stock)]) == list(stock) and override.get('in_channels') != stock:
        raise ValueError(f'{name} ({part.get("type")}) passes the backbone\'s maps on as its first outputs '
                         f'(out_channels {list(out)} starts with in_channels {list(stock)}): its out_channels and '
                         'the in_channels of the heads after it must change too; edit the config by hand')


def _check_cascade(model: Dict[str, Any], strides: Sequence[int], indices: Sequence[int]) -> None:
    """Refuse cascaded decode heads that read single backbone maps of one stride in the stock model but would
    read MAViT stages of different strides (OCRNet on a dilated ResNet: its OCR head gathers its features with
    the first head's output, so the two must be of one size)."""
    heads = model.get('decode_head')
    if model.get('neck') is not None or not isinstance(heads, (list, tuple)):
        return
    single = [h.get('in_index', -1) for h in heads if h.get('input_transform') is None]
    single = [i for i in single if isinstance(i, int)]
    stock = {strides[i] for i in single}
    ours = {4 * 2**indices[i] for i in single}
    if len(stock) == 1 and len(ours) > 1:
        raise ValueError(f'the cascaded decode heads read backbone maps {single}, all at stride {stock.pop()} in '
                         f'the stock model (a dilated backbone), but MAViT\'s stages for them have strides '
                         f'{sorted(ours)}: a later head combines its map with the earlier head\'s output, so the '
                         'sizes would not match; set both heads\' in_index (and in_channels) to one MAViT stage by '
                         'hand, or start from the HRNet variant of the config, whose heads resize their inputs')


def _readers(model: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """The model parts fed by the backbone directly, with their dotted names."""
    if model.get('neck') is not None:
        necks = model['neck'] if isinstance(model['neck'], list) else [model['neck']]
        return [('model.neck', necks[0])]
    found = []
    for key in HEAD_KEYS:
        head = model.get(key)
        for i, h in enumerate(head if isinstance(head, list) else [head] if head else []):
            found.append((f'model.{key}' + (f'[{i}]' if isinstance(head, list) else ''), h))
    return found


def swap_backbone(cfg: Config,
                  arch: str = 'tiny',
                  checkpoint: Optional[str] = None,
                  out_indices: Optional[Sequence[int]] = None,
                  keep_optimizer: bool = False) -> Dict[str, Any]:
    """The overrides that turn ``cfg`` into the same model on a MAViT backbone.

    Returns:
        dict: Config fields to write below ``_base_ = <stock config>``: ``model`` (backbone with
        ``_delete_``, the readers' channels), ``optim_wrapper`` and ``custom_imports``.
    """
    widths = MAViT.parse_arch(arch)['embed_dims']
    outputs = stock_outputs(cfg)
    strides, stock_channels = [s for s, _ in outputs], [c for _, c in outputs]
    if out_indices is not None:
        indices = tuple(out_indices)
        if len(indices) != len(outputs):
            raise ValueError(f'--out-indices {indices} must have one entry per stock backbone output '
                             f'({len(outputs)}: strides {strides})')
    else:
        indices = mavit_indices(strides, cfg.model.backbone)
    _check_cascade(cfg.model, strides, indices)
    # stock channels -> MAViT channels, output for output
    by_channels = {c: widths[m % 4] for c, m in zip(stock_channels, indices)}
    if len(by_channels) != len(outputs):
        raise ValueError(f'two stock outputs share a width ({stock_channels}): map in_channels by hand')

    model: Dict[str, Any] = dict(
        backbone=dict(
            _delete_=True,
            type='MAViT',
            arch=arch,
            out_indices=indices,
            norm_cfg=dict(type='SyncBN'),
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint or f'checkpoints/mavit-{arch[0]}_in1k.pth')))
    if cfg.model.get('pretrained'):  # mmseg passes model.pretrained on to the backbone
        model['pretrained'] = None
    if needs_mavit_preprocess(cfg.model.get('data_preprocessor') or {}):
        model['data_preprocessor'] = dict(MAVIT_PREPROCESS)  # e.g. caffe-style BGR configs
    changed = []
    for name, part in _readers(cfg.model):
        override = _channel_override(name, part, by_channels)
        if override:
            changed.append(name)
            _check_pass_through(name, part, override)
            if name == 'model.neck' and isinstance(cfg.model.neck, (list, tuple)):  # a chain of necks
                necks = model.setdefault('neck', copy.deepcopy(list(cfg.model.neck)))
                necks[0].update(override)
            elif '[' in name:  # a list of heads: rewrite the whole list
                key = name.split('.')[1].split('[')[0]
                heads = model.setdefault(key, copy.deepcopy(cfg.model[key]))
                heads[int(name.split('[')[1][:-1])].update(override)
            else:
                model[name.split('.')[1]] = override
    if not changed:
        raise ValueError('found no neck or head in_channels reading the backbone: the model reads it through a '
                         'part the tool does not know (a shared ResLayer RoI head as in C4 / TridentNet configs, a '
                         "classifier's pooling neck, a tracker); edit the config by hand")

    overrides: Dict[str, Any] = dict(custom_imports=dict(imports=['mavit_mm'], allow_failed_imports=False), model=model)
    optim = cfg.get('optim_wrapper', {})
    custom_keys = dict(optim.get('paramwise_cfg', {}).get('custom_keys', {}))
    custom_keys.update(NO_DECAY_KEYS)
    wrapper: Dict[str, Any] = dict(paramwise_cfg=dict(custom_keys=custom_keys))
    if not keep_optimizer and optim.get('optimizer', {}).get('type') != 'AdamW':
        # the paper's dense recipes: AdamW, lr 1e-4 per 16 images (x4 for detection 1x), wd 0.05
        wrapper['optimizer'] = dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    overrides['optim_wrapper'] = wrapper
    return overrides


def render_config(stock: str, out_path: str, overrides: Dict[str, Any]) -> str:
    """The text of a config that inherits ``stock`` (``mmdet::...`` or a path) with ``overrides``."""
    base = stock if '::' in stock else osp.relpath(osp.abspath(stock), osp.dirname(osp.abspath(out_path)))
    lines = [
        f'# {osp.basename(stock)} with a MAViT backbone, written by tools/misc/swap_backbone.py.', f"_base_ = '{base}'"
    ]
    lines += [f'{key} = {_format(value, 0, len(key) + 3)}' for key, value in overrides.items()]
    return '\n'.join(lines) + '\n'


def _format(value: Any, indent: int, used: int, width: int = 100) -> str:
    """``value`` in OpenMMLab's config style: ``dict(k=v, ...)``, one item a line when too long.

    ``indent``: indentation of the line the value starts on; ``used``: characters before it there.
    """
    if not isinstance(value, dict):
        return repr(value)
    if all(isinstance(k, str) and k.isidentifier() for k in value):
        keys = [f'{k}=' for k in value]
        head, tail = 'dict(', ')'
    else:
        keys = [f'{k!r}: ' for k in value]
        head, tail = '{', '}'
    flat = [k + _format(v, indent, 0, width=10**6) for k, v in zip(keys, value.values())]
    one_line = head + ', '.join(flat) + tail
    if used + len(one_line) <= width and '\n' not in one_line:
        return one_line
    items = [k + _format(v, indent + 4, indent + 4 + len(k), width) for k, v in zip(keys, value.values())]
    pad = ' ' * (indent + 4)
    return head + '\n' + ',\n'.join(pad + item for item in items) + tail

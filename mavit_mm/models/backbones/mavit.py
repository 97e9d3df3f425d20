"""MAViT backbone (Fan et al., "Rectifying Magnitude Neglect in Linear Attention", ICCV 2025).

A convolutional stem to stride 4, then four stages of :class:`MAViTBlock` at strides
4, 8, 16 and 32. By default stages 1-2 use magnitude-aware linear attention (MALA)
and stages 3-4 softmax attention, as in every released checkpoint. Parameter and
buffer names equal the authors' release, so its checkpoints load without remapping.
"""
import contextlib
import copy
from typing import Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mavit_mm.ops.conv import cudnn_without_benchmark
from mavit_mm.ops.mala import kernels_can_run
from mavit_mm.ops.warmup import warm_up
from mavit_mm.registry import MODELS
from ..layers.block import ATTENTIONS, LayerNorm2d, MAViTBlock
from ..layers.conv import autocast_weights_ahead, dense
from ..layers.rotary import RotaryEmbedding2d
from ..layers.warmup import kernel_jobs
from ..pretrained import load_pretrained_backbone

DEFAULT_ATTN_TYPES = ('mala', 'mala', 'softmax', 'softmax')
WITH_CP_PARTS = ('block', 'ffn', 'stem')
FAST_PATH_MODES = ('auto', 'off')


def parse_fast_path(mode: str) -> str:
    """``fast_path`` checked against :data:`FAST_PATH_MODES`."""
    if mode not in FAST_PATH_MODES:
        raise ValueError(f'fast_path must be one of {FAST_PATH_MODES}, got {mode!r}')
    return mode


def parse_with_cp(with_cp: Union[bool, Sequence[str]]) -> FrozenSet[str]:
    """``with_cp`` as the set of parts it recomputes: ``False`` -> {}, ``True`` -> {'block'} (whole
    blocks, as mmpretrain's backbones), a list of parts -> those (``['ffn', 'stem']``)."""
    if with_cp is False or with_cp is None:
        return frozenset()
    if with_cp is True:
        return frozenset({'block'})
    parts = list(with_cp) if isinstance(with_cp, (list, tuple)) else None
    if parts is None or not parts or any(p not in WITH_CP_PARTS for p in parts):
        raise ValueError(f'with_cp must be False, True (whole blocks) or a list of parts from {WITH_CP_PARTS} '
                         f"such as ['ffn', 'stem'], got {with_cp!r}")
    if {'block', 'ffn'} <= set(parts):
        raise ValueError("with_cp: 'block' already recomputes the FFNs; use ['block', 'stem'] or ['ffn', 'stem']")
    return frozenset(parts)


@contextlib.contextmanager
def _batch_norms_keep_running_stats(module: nn.Module) -> Iterator[None]:
    """Put the BatchNorm running statistics of ``module`` back as they were on entry: for the
    recomputation of a checkpointed stem, whose first pass already updated them. (Turning the
    tracking off instead would change what the recomputation saves, which checkpointing rejects.)"""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats and m.training]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class ConvStem(nn.Module):
    """Four 3x3 convs to stride 4: ``(B, in_channels, H, W)`` -> ``(B, C, H/4, W/4)``.

    The layers sit in ``proj`` (an ``nn.Sequential``) at the release's indices:
    convs at 0, 3, 6, 9, norms at 1, 4, 7, 10, GELUs at 2, 5, 8.
    """

    def __init__(self, in_channels: int, embed_dims: int, norm_cfg: dict, recompute: bool = False) -> None:
        super().__init__()
        self.recompute = recompute
        mid = embed_dims // 2
        layers: List[nn.Module] = []
        for i, (c_in, c_out, stride) in enumerate([(in_channels, mid, 2), (mid, mid, 1), (mid, mid, 1),
                                                   (mid, embed_dims, 2)]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), build_norm_layer(norm_cfg, c_out)[1]]
            if i < 3:
                layers.append(nn.GELU())
        self.proj = nn.Sequential(*layers)
        self.fast_convs = False  # set by the backbone's fast_path (mavit_mm.models.layers.conv.dense)

    def _stem(self, x: Tensor) -> Tensor:
        for layer in self.proj:
            x = dense(layer, x, self.fast_convs) if isinstance(layer, nn.Conv2d) else layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if self.recompute and torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad
                                                                                  for p in self.parameters())):
            # keep only the image; the stride-2 and stride-4 maps are rebuilt in the backward
            return cp.checkpoint(
                self._stem,
                x,
                use_reentrant=False,
                preserve_rng_state=False,
                context_fn=lambda: (contextlib.nullcontext(), _batch_norms_keep_running_stats(self.proj)))
        return self._stem(x)


class Downsample(nn.Module):
    """3x3 stride-2 conv and a norm between two stages: ``(B, C_in, H, W)`` -> ``(B, C_out, H/2, W/2)``."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.fast_convs = False  # set by the backbone's fast_path (mavit_mm.models.layers.conv.dense)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # the fast path's channels-last maps: convolution and norm in NCHW, where cuDNN's plan for a
            # new input size is cheap (channels-last ones cost far more per size; docs/speed.md)
            x = self.norm(dense(self.reduction, x.contiguous(), self.fast_convs))
            return x.contiguous(memory_format=torch.channels_last)
        return self.norm(dense(self.reduction, x, self.fast_convs))


class MAViTStage(nn.Module):
    """One stage: rotary tables, ``depth`` blocks, then an optional downsample.

    ``forward`` returns ``(features before the downsample, input of the next stage)``.
    """

    def __init__(self,
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 attn_types: Sequence[str],
                 mlp_ratio: float,
                 drop_paths: Sequence[float],
                 layer_scale_init_value: float,
                 out_channels: Optional[int],
                 norm_cfg: dict,
                 with_cp: FrozenSet[str] = frozenset()) -> None:
        super().__init__()
        self.with_cp = 'block' in with_cp
        self.RoPE = RotaryEmbedding2d(embed_dims, num_heads)
        self.blocks = nn.ModuleList([
            MAViTBlock(
                embed_dims,
                num_heads,
                attn_types[j],
                mlp_ratio,
                drop_paths[j],
                layer_scale_init_value,
                ffn_recompute='ffn' in with_cp) for j in range(depth)
        ])
        self.downsample = (Downsample(embed_dims, out_channels, norm_cfg) if out_channels is not None else None)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        rope = self.RoPE(x.shape[-2:])
        # on the fast path under autocast: the stage's convolution weights cast in one launch, not one each
        ahead = autocast_weights_ahead(self.children(), x) if self.blocks[0].fast_convs else contextlib.nullcontext()
        with ahead:
            for block in self.blocks:
                if self.with_cp and x.requires_grad:
                    x = cp.checkpoint(block, x, rope, use_reentrant=False)
                else:
                    x = block(x, rope)
            return x, (self.downsample(x) if self.downsample is not None else x)


@MODELS.register_module()
class MAViT(BaseModule):
    """MAViT backbone for classification, detection and segmentation.

    From `Rectifying Magnitude Neglect in Linear Attention <https://arxiv.org/abs/2507.00698>`_
    (Fan et al., ICCV 2025): magnitude-aware linear attention (MALA) in stages 1-2, softmax attention
    in stages 3-4.

    Args:
        arch (str | dict): A name in :attr:`arch_zoo` (``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'base'``/``'b'``, ``'large'``/``'l'``) or a dict with ``embed_dims``, ``depths``,
            ``num_heads`` and optionally ``layer_init_values``, ``mlp_ratio``,
            ``drop_path_rate``. Defaults to ``'tiny'``.
        in_channels (int): Image channels (1 for grayscale, 4 for RGB + depth/IR, ...). A
            3-channel pretrained stem is adapted when loaded (summed for 1 channel, else tiled
            and rescaled). Defaults to 3.
        out_indices (Sequence[int] | int): Stages whose outputs (before their downsample,
            through an output LayerNorm) are returned; negatives count from the end.
            Defaults to ``(0, 1, 2, 3)``.
        attn_types (str | Sequence): ``'mala'`` or ``'softmax'`` for every block, or one entry
            per stage, each a str or a list with one str per block. Defaults to the release's
            layout ``('mala', 'mala', 'softmax', 'softmax')``.
        drop_path_rate (float, optional): Stochastic depth at the last block, growing linearly
            from 0. Defaults to None, the arch's own rate.
        norm_cfg (dict): Norm of the stem and the downsamples. Defaults to ``dict(type='BN')``;
            use ``dict(type='SyncBN')`` for multi-GPU training (mmengine's Runner turns it back
            into BN when training is not distributed).
        out_norms (bool): Whether to build the four output LayerNorms ``extra_norms`` of the
            dense-prediction release. Classification (the release's head after stage 4)
            sets False. Defaults to True.
        frozen_stages (int): Freeze the stem (``>= 0``) and the first ``frozen_stages`` stages
            with their output norms; -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep BN layers (SyncBN included) in eval mode while training.
            Defaults to False.
        with_cp (bool | Sequence[str]): Activation checkpointing while training. ``True``: each
            block keeps only its input and runs again in the backward (least memory, most
            recomputation), as mmpretrain's backbones. A list selects parts: ``'block'`` (as True),
            ``'ffn'``: each FFN keeps only its input (its 3.5x-wide hidden maps are the largest
            activations; see ``tools/analysis_tools/benchmark.py memory``), ``'stem'``: the stem
            keeps only the image (its stride-2 maps are the next largest; BN running statistics
            are updated once); e.g. ``['ffn', 'stem']``. Defaults to False.
        fast_path (str): ``'auto'``: on CUDA, MALA runs as fused Triton kernels
            (:mod:`mavit_mm.ops.mala`), feature maps stay channels-last and the blocks' 1x1 and
            depthwise convolutions skip cuDNN's per-input-size planning (:mod:`mavit_mm.ops.conv`:
            GEMMs and Triton kernels that take any size), and the forward of the stem's and the
            downsamples' convolutions skips cuDNN's benchmark timing per input size where
            ``cudnn.benchmark`` is on; elsewhere, and with ``'off'``, plain PyTorch. Both compute
            the same function (docs/speed.md). Defaults to ``'auto'``.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads a
            release ImageNet checkpoint (head ignored), a detection / segmentation checkpoint
            (keys under ``backbone.``) or a plain backbone state dict. Defaults to None.

    Example:
        >>> import torch
        >>> from mavit_mm import MAViT
        >>> model = MAViT(arch='tiny', out_indices=(0, 1, 2, 3)).eval()
        >>> with torch.no_grad():
        ...     outs = model(torch.rand(1, 3, 224, 224))
        >>> [tuple(o.shape) for o in outs]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['t', 'tiny'],
                        dict(
                            embed_dims=[64, 128, 256, 512],
                            depths=[2, 2, 6, 2],
                            num_heads=[1, 2, 4, 8],
                            layer_init_values=[1, 1, 1, 1],
                            drop_path_rate=0.1,
                            projection=2048)),
        **dict.fromkeys(['s', 'small'],
                        dict(
                            embed_dims=[64, 128, 320, 512],
                            depths=[3, 5, 9, 3],
                            num_heads=[1, 2, 5, 8],
                            layer_init_values=[1, 1, 1, 1],
                            drop_path_rate=0.15,
                            projection=2048)),
        **dict.fromkeys(['b', 'base'],
                        dict(
                            embed_dims=[96, 192, 384, 512],
                            depths=[4, 6, 12, 6],
                            num_heads=[1, 2, 6, 8],
                            layer_init_values=[1, 1, 1e-6, 1e-6],
                            drop_path_rate=0.4,
                            projection=2048)),
        **dict.fromkeys(['l', 'large'],
                        dict(
                            embed_dims=[96, 192, 448, 640],
                            depths=[4, 7, 19, 8],
                            num_heads=[1, 2, 7, 10],
                            layer_init_values=[1e-6] * 4,
                            drop_path_rate=0.55,
                            projection=2560)),
    }
    _required_arch_keys = {'embed_dims', 'depths', 'num_heads'}

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 attn_types: Union[str, Sequence] = DEFAULT_ATTN_TYPES,
                 drop_path_rate: Optional[float] = None,
                 norm_cfg: dict = dict(type='BN'),
                 out_norms: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: Union[bool, Sequence[str]] = False,
                 fast_path: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self.parse_arch(arch)
        embed_dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        num_stages = len(depths)
        if in_channels < 1:
            raise ValueError(f'in_channels must be >= 1, got {in_channels}')
        self.in_channels = in_channels
        self.embed_dims = list(embed_dims)
        self.num_stages = num_stages
        self.out_indices = self._parse_out_indices(out_indices, num_stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}] (-1 freezes nothing, 0 the '
                             f'stem, k the stem and the first k stages), got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.with_cp = parse_with_cp(with_cp)
        fast_path = parse_fast_path(fast_path)
        self.norm_eval = norm_eval
        self.attn_types = self._parse_attn_types(attn_types, depths)
        if drop_path_rate is None:
            drop_path_rate = self.arch_settings.get('drop_path_rate', 0.0)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        layer_init_values = self.arch_settings.get('layer_init_values', [1.0] * num_stages)
        mlp_ratio = self.arch_settings.get('mlp_ratio', 3.5)

        self.patch_embed = ConvStem(in_channels, embed_dims[0], norm_cfg, recompute='stem' in self.with_cp)
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            self.layers.append(
                MAViTStage(embed_dims[i], depths[i], self.arch_settings['num_heads'][i], self.attn_types[i], mlp_ratio,
                           dpr[start:start + depths[i]], layer_init_values[i],
                           embed_dims[i + 1] if i + 1 < num_stages else None, norm_cfg, self.with_cp))
        self.extra_norms = (nn.ModuleList(LayerNorm2d(c) for c in embed_dims) if out_norms else None)
        self.apply(self._init_module)
        self.set_fast_path(fast_path)
        self._freeze_stages()

    def set_fast_path(self, mode: str) -> 'MAViT':
        """Switch between the fast path and plain PyTorch (see ``fast_path``); weights are shared."""
        self.fast_path = parse_fast_path(mode)
        fast = self.fast_path != 'off'
        self._warmed: Set[tuple] = set()  # (device, dtype, grad) of the kernel warm-ups done
        for m in self.modules():
            if hasattr(m, 'use_kernels'):  # the attentions' MALA kernels
                m.use_kernels = fast
            if hasattr(m, 'fast_convs'):  # the stem's, downsamples', blocks', attentions' and FFNs' convolutions
                m.fast_convs = fast
        return self

    def check_cuda_graphs(self, mode: str) -> None:
        """Refuse CUDA-graph modes this configuration cannot be captured in (see
        :func:`mavit_mm.engine.enable_cuda_graphs`)."""
        if mode in ('train', 'all') and 'block' in self.with_cp:
            raise ValueError("CUDA graphs of the training step cannot capture with_cp=True (whole blocks are "
                             "recomputed with DropPath re-seeded in the backward); use with_cp=['ffn'] or "
                             "['ffn', 'stem'] for memory")

    # ------------------------------------------------------------------ argument parsing
    @classmethod
    def parse_arch(cls, arch: Union[str, dict]) -> dict:
        """The settings of ``arch``: an :attr:`arch_zoo` entry by name (``'tiny'`` or ``'t'``, ...), or a
        dict checked for the required keys (``embed_dims``, ``depths``, ``num_heads``)."""
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(f'Unknown MAViT arch {arch!r}: choose one of '
                                 f'{sorted(cls.arch_zoo)} or pass a dict with keys '
                                 f'{sorted(cls._required_arch_keys)}')
            return copy.deepcopy(cls.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        missing = cls._required_arch_keys - set(arch)
        if missing:
            raise ValueError(f'Custom MAViT arch is missing keys {sorted(missing)}; '
                             f'it needs {sorted(cls._required_arch_keys)}')
        lengths = {k: len(arch[k]) for k in cls._required_arch_keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(f'Custom MAViT arch: embed_dims, depths and num_heads need one entry '
                             f'per stage, got lengths {lengths}')
        return copy.deepcopy(arch)

    @staticmethod
    def _parse_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices entry {index} is out of range: MAViT has '
                                 f'{num_stages} stages, use 0..{num_stages - 1} (or negatives)')
            parsed.append(index % num_stages)
        return tuple(parsed)

    @staticmethod
    def _parse_attn_types(attn_types: Union[str, Sequence], depths: Sequence[int]) -> List[List[str]]:
        if isinstance(attn_types, str):
            attn_types = [attn_types] * len(depths)
        if len(attn_types) != len(depths):
            raise ValueError(f'attn_types needs one entry per stage ({len(depths)}), got {attn_types!r}')
        per_block = []
        for i, (kind, depth) in enumerate(zip(attn_types, depths)):
            kinds = [kind] * depth if isinstance(kind, str) else list(kind)
            if len(kinds) != depth:
                raise ValueError(f'attn_types[{i}] lists {len(kinds)} blocks, stage {i} has {depth}')
            bad = [k for k in kinds if k not in ATTENTIONS]
            if bad:
                raise ValueError(f'Unknown attention type(s) {bad} in stage {i}: use {sorted(ATTENTIONS)}')
            per_block.append(kinds)
        return per_block

    # ------------------------------------------------------------------ weights
    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Initialisation from scratch, as the release: convs trunc-normal(0.02), zero biases."""
        if isinstance(m, nn.Conv2d):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s Pretrained checkpoint; other init_cfg types go to mmengine."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained_backbone(
                self,
                self.init_cfg['checkpoint'],
                prefix=self.init_cfg.get('prefix'),
                map_location=self.init_cfg.get('map_location', 'cpu'),
                logger=MMLogger.get_current_instance())
            self._is_init = True
        else:
            super().init_weights()
        self._freeze_stages()

    # ------------------------------------------------------------------ training behaviour
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen: List[nn.Module] = [self.patch_embed]
        for i in range(self.frozen_stages):
            frozen.append(self.layers[i])
            if self.extra_norms is not None:
                frozen.append(self.extra_norms[i])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MAViT':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):  # SyncBatchNorm included
                    m.eval()
        return self

    # ------------------------------------------------------------------ forward
    def _warm_up_kernels(self, x: Tensor) -> None:
        """Before the first fast-path forward in a dtype (and with or without gradients): compile the
        Triton kernels it launches in parallel worker processes (:mod:`mavit_mm.ops.warmup`) rather than
        one after another inside the step."""
        if not x.is_cuda or torch.compiler.is_compiling():
            return
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        key = (x.device, dtype, torch.is_grad_enabled())
        if key in self._warmed or torch.cuda.is_current_stream_capturing():
            return
        self._warmed.add(key)
        warm_up(kernel_jobs(self, dtype, key[2]), x.device)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """``(B, in_channels, H, W)`` -> one ``(B, embed_dims[i], ceil(H / 2^(i+2)), ...)`` map
        per entry of ``out_indices`` (strides 4, 8, 16, 32)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'MAViT expects (B, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}. For '
                             f'grayscale or multi-band images set backbone in_channels (and the data preprocessor\'s '
                             f'mean/std to as many values), or convert the images to {self.in_channels} channels '
                             f"(LoadImageFromFile color_type='color').")
        if self.fast_path != 'off' and x.is_cuda and torch.backends.cudnn.benchmark:
            # the stem's and the downsamples' convolutions on cuDNN without timing runs per input size
            # (mmseg's runtime turns benchmarking on; its test images come in many sizes)
            with cudnn_without_benchmark():
                return self._forward(x)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The stem, the stages and the output norms: what :meth:`forward` computes."""
        with autocast_weights_ahead([self.patch_embed], x) if self.fast_path != 'off' else contextlib.nullcontext():
            x = self.patch_embed(x)
        # channels-last blocks on the fast path: LayerNorm2d's permutes become views, the attention's
        # q/k/v views are read in place by the kernels, 1x1 convs run as NHWC GEMMs. The stem and the
        # downsamples stay NCHW: cuDNN plans their convolutions per input size, cheaply only in NCHW.
        if self.fast_path != 'off' and kernels_can_run(x):
            self._warm_up_kernels(x)
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i, stage in enumerate(self.layers):
            feat, x = stage(x)
            if i in self.out_indices:
                out = self.extra_norms[i](feat) if self.extra_norms is not None else feat
                # Hand necks and heads contiguous NCHW maps in every mode: LayerNorm2d's permutes
                # leave channels-last memory, convolutions keep it, and mmcv's RoIAlign reads its
                # input as contiguous NCHW whatever the strides (wrong RoI features otherwise).
                outs.append(out.contiguous())
        return tuple(outs)

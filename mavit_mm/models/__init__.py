"""Models of mavit_mm; importing registers them in mmengine's root MODELS registry."""
from .backbones import MAViT  # noqa: F401
from .layers import MALAttention, RoPESoftmaxAttention  # noqa: F401

__all__ = ['MAViT', 'MALAttention', 'RoPESoftmaxAttention']

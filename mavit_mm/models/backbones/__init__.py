from .mavit import MAViT

__all__ = ['MAViT']

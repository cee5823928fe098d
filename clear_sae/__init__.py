"""clear_sae: per-layer sparse autoencoders and latent-clamp concept erasure (CLEAR)."""

__version__ = "0.1.0"

from clear_sae.errors import ClearSaeError

__all__ = ["ClearSaeError", "__version__"]

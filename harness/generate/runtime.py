"""Applying runtime options (declared and checked in config.py): attention backend,
torch.compile of the UNet, model CPU offload, VAE slicing and tiling."""

from __future__ import annotations

import contextlib

from harness.spec import RuntimeOptions, check_runtime


def apply_runtime(pipe, options: RuntimeOptions, device: str) -> None:
    """Configure a freshly loaded pipeline (before it is moved to ``device``, for offload)."""
    check_runtime(options, device)
    if options.attention_backend == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        pipe.unet.set_attn_processor(AttnProcessor())
        pipe.vae.set_attn_processor(AttnProcessor())
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if options.compile != "none":
        pipe.unet.compile(mode=None if options.compile == "default" else options.compile)


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (None: leave torch's default, one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def attention_context(options: RuntimeOptions) -> contextlib.AbstractContextManager:
    """Context for each pipeline call: selects the SDPA kernel when one is forced."""
    kernels = {
        "sdpa-math": "MATH", "sdpa-flash": "FLASH_ATTENTION",
        "sdpa-efficient": "EFFICIENT_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION",
    }
    if options.attention_backend not in kernels:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, kernels[options.attention_backend]))

"""Instrumented generation from cached conditioning: the denoising loop, VAE decode and
vocoder of ``AudioLDM2Pipeline.__call__``, with explicit stage boundaries.

Each sample has its own ``torch.Generator("cpu").manual_seed(seed)``; diffusers draws a list of
generators' latents one sample at a time, so a sample's audio does not depend on batch size or
neighbours, and a bare ``pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed))``
call with the same settings reproduces it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from harness.stages import DENOISE, DENOISE_STEP, VAE_DECODE, VOCODER
from harness.measure.trackers import NullTracker, Tracker
from harness.generate.conditioning import Conditioning


def generators_for(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per sample, so latents are identical on every device."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def latent_height(pipe, audio_length_s: float) -> tuple[int, int]:
    """Spectrogram height (rounded up to the VAE factor) and the waveform length to keep."""
    vocoder = pipe.vocoder.config
    upsample = float(np.prod(vocoder.upsample_rates)) / vocoder.sampling_rate
    height = int(audio_length_s / upsample)
    if height % pipe.vae_scale_factor:
        height = math.ceil(height / pipe.vae_scale_factor) * pipe.vae_scale_factor
    minimum = upsample * pipe.vae_scale_factor
    if audio_length_s < minimum:
        raise ValueError(f"audio_length_s must be >= {minimum:g} for this checkpoint, got {audio_length_s}")
    return height, int(audio_length_s * vocoder.sampling_rate)


@torch.no_grad()
def denoise(pipe, cond: Conditioning, generators: list[torch.Generator], steps: int,
            guidance_scale: float, height: int, tracker: Tracker) -> torch.Tensor:
    """The UNet loop of AudioLDM2Pipeline.__call__ on a batch; returns final latents."""
    guided = guidance_scale > 1.0
    # Where encode_prompt put the conditioning: pipe._execution_device would find the same device
    # by walking every module of the pipeline again, a cost on every call.
    device = cond.prompt_embeds.device
    pipe.scheduler.set_timesteps(steps, device=device)
    latents = pipe.prepare_latents(
        len(generators), pipe.unet.config.in_channels, height, cond.prompt_embeds.dtype, device, generators
    )
    extra = pipe.prepare_extra_step_kwargs(generators, 0.0)
    for t in pipe.scheduler.timesteps:
        with tracker.stage(DENOISE_STEP):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = pipe.scheduler.scale_model_input(model_input, t)
            noise = pipe.unet(
                model_input, t,
                encoder_hidden_states=cond.generated_prompt_embeds,
                encoder_hidden_states_1=cond.prompt_embeds,
                encoder_attention_mask_1=cond.attention_mask,
                return_dict=False,
            )[0]
            if guided:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance_scale * (text - uncond)
            latents = pipe.scheduler.step(noise, t, latents, **extra).prev_sample
    return latents


class HostAudio:
    """Waveforms on their way to host memory; ``numpy()`` waits for the copy and returns them.

    On CUDA the vocoder output is copied into pinned memory without blocking, so the next batch
    can be queued on the GPU while the writer thread waits for this one.
    """

    def __init__(self, host: torch.Tensor, keep: int, copied: torch.cuda.Event | None = None) -> None:
        self._host, self._keep, self._copied = host, keep, copied

    def numpy(self) -> np.ndarray:
        """Float32 waveforms of shape (batch, keep)."""
        if self._copied is not None:
            self._copied.synchronize()
        return self._host[:, :self._keep].numpy().astype(np.float32, copy=False)


@torch.no_grad()
def decode(pipe, latents: torch.Tensor, keep: int, tracker: Tracker) -> HostAudio:
    """VAE decode and vocoder (as ``pipe.mel_spectrogram_to_waveform``), copied to the host."""
    with tracker.stage(VAE_DECODE):
        mel = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    with tracker.stage(VOCODER):
        waveform = pipe.vocoder(mel.squeeze(1) if mel.dim() == 4 else mel).float()
    if waveform.device.type != "cuda":
        return HostAudio(waveform, keep)
    host = torch.empty(waveform.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(waveform, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(waveform.device))  # the copy's stream, also on cuda:N
    return HostAudio(host, keep, copied)


def generate_to_host(pipe, cond: Conditioning, seeds: list[int], steps: int, guidance_scale: float,
                     audio_length_s: float, tracker: Tracker | None = None) -> HostAudio:
    """Generate one waveform per seed from a stacked conditioning (see conditioning.stack)."""
    tracker = tracker or NullTracker()
    height, keep = latent_height(pipe, audio_length_s)
    with tracker.stage(DENOISE):
        latents = denoise(pipe, cond, generators_for(seeds), steps, guidance_scale, height, tracker)
    return decode(pipe, latents, keep, tracker)


def generate(pipe, cond: Conditioning, seeds: list[int], steps: int, guidance_scale: float,
             audio_length_s: float, tracker: Tracker | None = None) -> np.ndarray:
    """``generate_to_host`` and wait: float32 waveforms of shape (batch, samples)."""
    return generate_to_host(pipe, cond, seeds, steps, guidance_scale, audio_length_s, tracker).numpy()

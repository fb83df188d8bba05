"""Loading AudioLDM 2 pipelines: hub ids (with revision), local folders, the HF cache, offline
mode, and the built-in tiny checkpoints; plus a cache so a sweep loads each pipeline once."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from diffusers import AudioLDM2Pipeline
from diffusers.utils import logging as diffusers_logging

from harness.checkpoints.registry import BUILTIN, CheckpointError, CheckpointInfo, describe
from harness.schedulers import build_scheduler
from harness.spec import Cell, RuntimeOptions
from harness.generate.language_model import patch_pipeline
from harness.hub import missing_weights_message
from harness.generate.runtime import apply_runtime, attention_context

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoadedPipeline:
    """A ready pipeline plus what the harness needs to know about it."""

    pipe: AudioLDM2Pipeline
    info: CheckpointInfo
    location: str
    load_seconds: float
    base_scheduler: Any = field(repr=False)  # the checkpoint's own scheduler, for from_config swaps
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def call_context(self):
        """Context to wrap every pipeline call in (forced SDPA kernel, if any)."""
        return attention_context(self.runtime)


def check_device_dtype(dtype: str, device: str) -> None:
    """Refuse combinations that do not apply on the device, naming the option."""
    if dtype == "fp16" and not device.startswith("cuda"):
        raise ValueError(f"dtype 'fp16' needs a CUDA device (device is {device!r}); use fp32 or bf16")


def locate(checkpoint: str) -> str:
    """Where from_pretrained should read: a built tiny or random-weight folder, a local folder,
    or the hub id."""
    from harness.checkpoints.registry import RANDOM_PREFIX

    if checkpoint.startswith(RANDOM_PREFIX):  # "random:<hub id>": built once into the cache
        from harness.checkpoints.random_full import random_checkpoint_path

        return str(random_checkpoint_path(checkpoint.removeprefix(RANDOM_PREFIX)))
    if checkpoint in BUILTIN:
        from harness.checkpoints.tiny import tiny_checkpoint_path

        return str(tiny_checkpoint_path(checkpoint.removeprefix("tiny-")))
    return str(Path(checkpoint).expanduser()) if Path(checkpoint).expanduser().is_dir() else checkpoint


@contextmanager
def _quiet_loading() -> Iterator[None]:
    # Loading logs "Expected types for language_model: GPT2LMHeadModel, got GPT2Model": expected
    # for every published checkpoint, and the reason the harness owns the language-model step.
    # Their per-component progress bars are noise in a sweep's own progress display.
    from transformers.utils import logging as transformers_logging

    import warnings

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    # `torch_dtype` is deprecated in new diffusers but `dtype` is unknown to older ones.
    warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(previous)
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def _missing_weights_error(checkpoint: str, revision: str | None, err: Exception) -> CheckpointError:
    return CheckpointError(missing_weights_message("", checkpoint, revision, err,
                                                   "pass a local folder in diffusers format"))


def check_phonemizer(pipe, checkpoint: str) -> None:
    """Speech checkpoints phonemize transcriptions with phonemizer + espeak-ng: check both exist."""
    tokenizer = getattr(pipe, "tokenizer_2", None)
    if not getattr(tokenizer, "phonemize", False):
        return
    import importlib.util
    import shutil

    if importlib.util.find_spec("phonemizer") is None or not (
        shutil.which("espeak-ng") or shutil.which("espeak")
    ):
        raise CheckpointError(
            f"{checkpoint} phonemizes transcriptions and needs phonemizer and espeak-ng: "
            "pip install phonemizer; apt-get install espeak-ng (brew install espeak-ng on macOS)"
        )


def load_pipeline(checkpoint: str, revision: str | None, dtype: str, device: str,
                  runtime: RuntimeOptions | None = None) -> LoadedPipeline:
    """Load, put in eval mode, fix the language-model step, apply runtime options, move to ``device``."""
    runtime = runtime or RuntimeOptions()
    check_device_dtype(dtype, device)
    info = describe(checkpoint)
    location = locate(checkpoint)
    start = time.perf_counter()
    try:
        with _quiet_loading():
            pipe = AudioLDM2Pipeline.from_pretrained(
                location, revision=revision, torch_dtype=DTYPES[dtype]
            )
    except (OSError, ValueError, ConnectionError) as err:
        raise _missing_weights_error(checkpoint, revision, err) from err
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # dropout in the text encoders and GPT-2 would change every output
    check_phonemizer(pipe, checkpoint)
    patch_pipeline(pipe)
    apply_runtime(pipe, runtime, device)
    pipe.set_progress_bar_config(disable=True)
    return LoadedPipeline(pipe, info, location, time.perf_counter() - start, pipe.scheduler, runtime)


def _release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PipelineCache:
    """Keeps the most recently used pipeline loaded; a sweep orders cells so each loads once."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._loaded: LoadedPipeline | None = None
        self.loads = 0

    def get(self, checkpoint: str, revision: str | None, dtype: str, device: str,
            runtime: RuntimeOptions | None = None) -> LoadedPipeline:
        """Return the loaded pipeline for this key, loading it (and dropping the previous) if needed."""
        key = (checkpoint, revision, dtype, device, runtime)
        if key != self._key:
            self._loaded = None  # free the previous pipeline before loading the next
            _release_memory()
            self._loaded = load_pipeline(checkpoint, revision, dtype, device, runtime)
            self._key = key
            self.loads += 1
        return self._loaded

    def for_cell(self, cell: Cell, allow_unsafe_schedulers: bool = False) -> LoadedPipeline:
        """The pipeline of ``cell``'s checkpoint, dtype, device and runtime, with its scheduler swapped in."""
        loaded = self.get(cell.checkpoint, cell.revision, cell.dtype, cell.device, cell.runtime)
        loaded.pipe.scheduler = build_scheduler(cell.scheduler_type, cell.scheduler_options,
                                                loaded.base_scheduler, allow_unsafe_schedulers)
        return loaded

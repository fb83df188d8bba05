"""Runtime options on the tiny checkpoint: each one applied, numerics kept, misuse refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.spec import RuntimeOptions, check_runtime, expand, parse_spec
from harness.measure.stages import one_call
from harness.measure.trackers import NullTracker
from harness.generate.load import load_pipeline
from harness.schedulers import build_scheduler


@pytest.fixture(scope="module")
def cell():
    spec = parse_spec({"name": "r", "checkpoints": ["tiny-audio"], "steps": [3], "audio_lengths_s": [1.0],
                       "prompts": {"set": "smoke"}})
    return expand(spec, "cpu")[0]


def _audio(runtime: RuntimeOptions, cell, seeds=(0, 1)):
    loaded = load_pipeline("tiny-audio", None, "fp32", "cpu", runtime)
    loaded.pipe.scheduler = build_scheduler("ddim", {}, loaded.base_scheduler)
    return loaded, one_call(loaded, cell, "a bell rings", None, list(seeds), NullTracker())


@pytest.fixture(scope="module")
def baseline(cell):
    return _audio(RuntimeOptions(), cell)[1]


@pytest.mark.parametrize("options", [
    {"attention_backend": "eager"}, {"attention_backend": "sdpa-math"},
    {"vae_slicing": True}, {"vae_tiling": True},
])
def test_option_is_applied_and_keeps_numerics(options, cell, baseline):
    loaded, audio = _audio(RuntimeOptions(**options), cell)
    assert np.abs(audio - baseline).max() <= 1e-4 * max(1.0, np.abs(baseline).max())
    if options.get("attention_backend") == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        assert all(isinstance(p, AttnProcessor) for p in loaded.pipe.unet.attn_processors.values())
    if "vae_slicing" in options:
        assert loaded.pipe.vae.use_slicing
    if "vae_tiling" in options:
        assert loaded.pipe.vae.use_tiling


def test_compile_compiles_the_unet(monkeypatch, cell):
    # A real inductor compile of even the tiny UNet takes minutes on 2 CPU cores; the CUDA test
    # below compiles for real. Here: the option reaches nn.Module.compile with the right mode.
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    load_pipeline("tiny-audio", None, "fp32", "cpu", RuntimeOptions(compile="max-autotune"))
    assert calls == [("AudioLDM2UNet2DConditionModel", {"mode": "max-autotune"})]


@pytest.mark.parametrize(("options", "needle"), [
    ({"cpu_offload": True}, "cpu_offload needs a CUDA device"),
    ({"attention_backend": "sdpa-efficient"}, "'sdpa-efficient' needs a CUDA device"),
    ({"compile": "reduce-overhead"}, "CUDA graphs"),
])
def test_options_that_do_not_apply_on_cpu(options, needle):
    with pytest.raises(ValueError, match=needle):
        check_runtime(RuntimeOptions(**options), "cpu")
    check_runtime(RuntimeOptions(**options), "cuda")  # fine where they apply


def test_runtime_options_change_cell_ids():
    base = {"name": "r", "checkpoints": ["tiny-audio"], "prompts": {"set": "smoke"}}
    cells = expand(parse_spec({**base, "attention_backends": ["sdpa", "eager"], "vae_slicing": [False, True]}), "cpu")
    assert len(cells) == 4 and len({c.id for c in cells}) == 4 and len({c.load_key for c in cells}) == 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_and_offload_on_cuda(cell):
    cuda_cell = cell.model_copy(update={"device": "cuda"})
    for options in [RuntimeOptions(compile="default"), RuntimeOptions(cpu_offload=True),
                    RuntimeOptions(attention_backend="sdpa-efficient")]:
        loaded = load_pipeline("tiny-audio", None, "fp32", "cuda", options)
        loaded.pipe.scheduler = build_scheduler("ddim", {}, loaded.base_scheduler)
        audio = one_call(loaded, cuda_cell, "a bell rings", None, [0], NullTracker())
        assert np.isfinite(audio).all()

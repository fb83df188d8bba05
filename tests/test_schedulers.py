"""Scheduler registry: every compatible scheduler runs, swaps keep the model, errors list names."""

from __future__ import annotations

import numpy as np
import pytest

from harness.generate.conditioning import ConditioningKey, encode, stack
from harness.generate.sampling import generate
from harness.schedulers import SCHEDULERS, SchedulerError, build_scheduler, compatible_names, is_available

RUNNABLE = [n for n, e in SCHEDULERS.items() if not e.opt_in]


def test_registry_covers_the_ddim_compatibles(tiny_audio):
    names = compatible_names(tiny_audio.base_scheduler)
    assert set(names) == set(SCHEDULERS)  # all 15 compatibles of the checkpoints' DDIM config
    assert len(RUNNABLE) == 14


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_scheduler_generates_without_reloading(tiny_audio, name):
    if not is_available(name):
        pytest.fail(f"{name} needs {SCHEDULERS[name].needs}; the test extra installs it")
    pipe = tiny_audio.pipe
    unet = pipe.unet
    pipe.scheduler = build_scheduler(name, {}, tiny_audio.base_scheduler)
    assert type(pipe.scheduler).__name__ == SCHEDULERS[name].class_name
    assert pipe.unet is unet
    cond = encode(pipe, ConditioningKey("thunder", None, "", True, None))
    steps = max(3, SCHEDULERS[name].minimum_steps({}))
    audio = generate(pipe, stack([cond], True), [0], steps, 3.5, 0.5)
    assert audio.shape == (1, 8000) and np.isfinite(audio).all()


def test_options_reach_the_scheduler(tiny_audio):
    s = build_scheduler("dpmsolver++", {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
                        tiny_audio.base_scheduler)
    assert s.config.use_karras_sigmas is True and s.config.algorithm_type == "sde-dpmsolver++"
    assert s.config.beta_end == tiny_audio.base_scheduler.config.beta_end  # from the checkpoint config


def test_unknown_and_refused(tiny_audio):
    with pytest.raises(SchedulerError, match="unknown scheduler 'foo'; valid: ddim, ddpm"):
        build_scheduler("foo", {}, tiny_audio.base_scheduler)
    with pytest.raises(SchedulerError, match="allow_unsafe_schedulers"):
        build_scheduler("edm-euler", {}, tiny_audio.base_scheduler)
    assert type(build_scheduler("edm-euler", {}, tiny_audio.base_scheduler, allow_unsafe=True)).__name__ == "EDMEulerScheduler"


def test_incompatible_base_lists_valid_names():
    from diffusers import FlowMatchEulerDiscreteScheduler

    base = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(SchedulerError, match="not compatible with FlowMatchEulerDiscreteScheduler; valid:"):
        build_scheduler("ddim", {}, base)

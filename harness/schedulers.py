"""Scheduler registry: short names -> diffusers scheduler classes, option checking, swapping.

A scheduler is chosen by a short name (``dpmsolver++``) plus config overrides
(``use_karras_sigmas = true``) and built with ``cls.from_config(checkpoint_config, **options)``,
so swapping it never reloads the model. Options are checked against the class's own
``__init__`` type hints, so a wrong type is caught when the sweep file is read, not mid-run.
"""

from __future__ import annotations

import functools
import importlib.util
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.errors import HarnessError


@dataclass(frozen=True)
class SchedulerEntry:
    """One registered scheduler: its short name, diffusers class name and notes."""

    name: str
    class_name: str
    description: str
    needs: str | None = None  # an optional Python package the scheduler imports
    opt_in: bool = False  # refused unless the sweep sets allow_unsafe_schedulers
    min_steps: int = 1  # fewer fails inside set_timesteps

    def minimum_steps(self, options: dict[str, Any]) -> int:
        """Fewest inference steps this scheduler accepts with these options."""
        # PNDM's Runge-Kutta warm-up needs 4 steps unless skip_prk_steps is set.
        return 1 if options.get("skip_prk_steps") else self.min_steps


SCHEDULERS: dict[str, SchedulerEntry] = {
    e.name: e
    for e in [
        SchedulerEntry("ddim", "DDIMScheduler", "DDIM (the checkpoints' own scheduler)"),
        SchedulerEntry("ddpm", "DDPMScheduler", "DDPM ancestral sampling"),
        SchedulerEntry("pndm", "PNDMScheduler", "PNDM / PLMS", min_steps=4),
        SchedulerEntry("lms", "LMSDiscreteScheduler", "linear multistep"),
        SchedulerEntry("euler", "EulerDiscreteScheduler", "Euler"),
        SchedulerEntry("euler-ancestral", "EulerAncestralDiscreteScheduler", "Euler ancestral"),
        SchedulerEntry("heun", "HeunDiscreteScheduler", "Heun (2 UNet calls per step)"),
        SchedulerEntry("dpmsolver++", "DPMSolverMultistepScheduler", "DPM-Solver++ multistep"),
        SchedulerEntry(
            "dpmsolver-singlestep", "DPMSolverSinglestepScheduler", "DPM-Solver singlestep"
        ),
        SchedulerEntry("dpmsolver-sde", "DPMSolverSDEScheduler", "DPM-Solver SDE", needs="torchsde"),
        SchedulerEntry("kdpm2", "KDPM2DiscreteScheduler", "KDPM2"),
        SchedulerEntry("kdpm2-ancestral", "KDPM2AncestralDiscreteScheduler", "KDPM2 ancestral"),
        SchedulerEntry("deis", "DEISMultistepScheduler", "DEIS multistep"),
        SchedulerEntry("unipc", "UniPCMultistepScheduler", "UniPC multistep"),
        SchedulerEntry(
            "edm-euler",
            "EDMEulerScheduler",
            "EDM Euler: assumes EDM preconditioning, which AudioLDM 2 was not trained with",
            opt_in=True,
        ),
    ]
}


class SchedulerError(HarnessError, ValueError):
    """A scheduler name or option the harness cannot use; the message lists valid choices."""


def scheduler_class(name: str) -> type:
    """Return the diffusers class registered under ``name``."""
    import diffusers  # here, not at import: listing and checking names must not load torch

    return getattr(diffusers, get_entry(name).class_name)


def get_entry(name: str) -> SchedulerEntry:
    """Look up a registry entry, with an error listing the valid names."""
    if name not in SCHEDULERS:
        raise SchedulerError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name]


def is_available(name: str) -> bool:
    """Whether the optional package a scheduler needs is installed."""
    needs = get_entry(name).needs
    return needs is None or importlib.util.find_spec(needs) is not None


@functools.lru_cache(maxsize=None)
def _option_types(class_name: str) -> dict[str, Any]:
    import diffusers

    return typing.get_type_hints(getattr(diffusers, class_name).__init__)


_TOML_SCALARS = (bool, int, float, str, type(None))


def _toml_hint(hint: Any) -> Any | None:
    """The part of a type hint a TOML value can take, or None when no TOML value fits.

    ``trained_betas: np.ndarray | list[float] | None`` becomes ``list[float] | None``; a hint
    with no TOML form at all (``solver_p: SchedulerMixin``) cannot be set from a sweep file.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _TOML_SCALARS or origin is typing.Literal:
        return hint
    if origin in (typing.Union, types.UnionType):
        kept = [k for k in (_toml_hint(a) for a in args) if k is not None]
        return None if not kept else kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]
    if origin in (list, tuple) and args:
        inner = [_toml_hint(a) for a in args if a is not Ellipsis]
        return hint if all(i is not None for i in inner) else None
    return None


def _check_trained_betas(name: str, options: dict[str, Any]) -> None:
    # diffusers takes the betas' length on trust; a wrong one fails every sample later.
    betas, steps = options.get("trained_betas"), options.get("num_train_timesteps", 1000)
    if betas is None:
        return
    if len(betas) != steps:
        raise SchedulerError(f"scheduler {name!r} option 'trained_betas' must have num_train_timesteps = {steps} "
                             f"values, got {len(betas)}")
    if not all(0 < b < 1 for b in betas):
        raise SchedulerError(f"scheduler {name!r} option 'trained_betas' must hold values in (0, 1)")


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate config overrides against the scheduler's __init__ type hints."""
    if not options:
        get_entry(name)
        return {}
    types = _option_types(get_entry(name).class_name)
    for key, value in options.items():
        if key not in types or key == "return":
            valid = ", ".join(sorted(k for k in types if k != "return"))
            raise SchedulerError(f"scheduler {name!r} has no option {key!r}; valid: {valid}")
        hint = _toml_hint(types[key])
        if hint is None:
            raise SchedulerError(f"scheduler {name!r} option {key!r} takes a {_type_name(types[key])}, which a "
                                 "sweep file cannot express; leave it at the checkpoint's value")
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            raise SchedulerError(
                f"scheduler {name!r} option {key!r} must be {_type_name(hint)}, got {_short(value)}"
            ) from None
    _check_trained_betas(name, options)
    return dict(options)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))


def compatible_names(base_scheduler) -> list[str]:
    """Registry names whose classes the checkpoint's scheduler declares compatible."""
    compatibles = {c.__name__ for c in base_scheduler.compatibles} | {type(base_scheduler).__name__}
    return [n for n, e in SCHEDULERS.items() if e.class_name in compatibles]


def build_scheduler(name: str, options: dict[str, Any], base_scheduler, allow_unsafe: bool = False):
    """Build scheduler ``name`` from the checkpoint's scheduler config (no model reload)."""
    entry = get_entry(name)
    valid = compatible_names(base_scheduler)
    if name not in valid:
        raise SchedulerError(
            f"scheduler {name!r} is not compatible with {type(base_scheduler).__name__}; "
            f"valid: {', '.join(valid)}"
        )
    if entry.opt_in and not allow_unsafe:
        raise SchedulerError(
            f"scheduler {name!r} is refused: {entry.description}; "
            "set allow_unsafe_schedulers = true in the sweep to run it anyway"
        )
    if not is_available(name):
        raise SchedulerError(f"scheduler {name!r} needs {entry.needs}: pip install {entry.needs}")
    return scheduler_class(name).from_config(base_scheduler.config, **check_options(name, options))

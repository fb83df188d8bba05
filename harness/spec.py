"""Sweep files: TOML -> validated ``SweepSpec`` -> ``Cell`` list with stable ids.

A cell is one point of the sweep (checkpoint, dtype, device, scheduler, steps, guidance,
negative prompt, audio length, runtime options). Its id hashes its canonical JSON plus the
versions of the packages that change outputs, so a changed setting or upgraded library gets
new cells instead of mixing results. Seeds and prompts are not part of the cell: a sample is
(cell, prompt id, seed), so adding seeds or prompts to a sweep reuses the samples already made.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError
from harness.validation import MAX_DEPTH, first_error, one_line, tree_problem
from harness.checkpoints.registry import CheckpointError, describe
from harness.environment import output_versions
from harness.schedulers import SchedulerError, check_options, get_entry

Dtype = Literal["fp32", "fp16", "bf16"]


class ConfigError(HarnessError, ValueError):
    """A sweep file that cannot be used; the message is one line naming the key."""


class _Strict(BaseModel):
    # strict: `steps = ["2"]` or `cpu_offload = [1]` are mistakes, not values to coerce;
    # allow_inf_nan: a NaN guidance is stored as NULL and its cell row is lost.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


AttentionBackend = Literal["sdpa", "sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "eager"]
CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]

_CUDA_ONLY_BACKENDS = {"sdpa-flash", "sdpa-efficient", "sdpa-cudnn"}


class RuntimeOptions(_Strict):
    """How a pipeline runs; part of a cell's identity (they can change numerics)."""

    attention_backend: AttentionBackend = "sdpa"
    compile: CompileMode = "none"
    cpu_offload: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False


def check_runtime(options: RuntimeOptions, device: str) -> None:
    """Raise ValueError naming the first option that does not apply on ``device``."""
    on_cuda = device.startswith("cuda")
    if options.attention_backend in _CUDA_ONLY_BACKENDS and not on_cuda:
        raise ValueError(
            f"attention_backend {options.attention_backend!r} needs a CUDA device (device is "
            f"{device!r}); on CPU use 'sdpa', 'sdpa-math' or 'eager'"
        )
    if options.cpu_offload and not on_cuda:
        raise ValueError(f"cpu_offload needs a CUDA device (device is {device!r}); set cpu_offload = false")
    if options.compile == "reduce-overhead" and not on_cuda:
        raise ValueError(
            f"compile 'reduce-overhead' uses CUDA graphs and needs a CUDA device (device is {device!r})"
        )


class CheckpointSpec(_Strict):
    """A checkpoint id (hub id, built-in name or local folder) and optional hub revision."""

    id: str = Field(min_length=1)
    revision: str | None = None
    # GPT-2 tokens per prompt; None: what the checkpoint needs (registry.CheckpointInfo.max_new_tokens)
    max_new_tokens: int | None = Field(default=None, gt=0)

    @field_validator("id")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            describe(value)
        except CheckpointError as err:
            raise ValueError(str(err)) from None
        except OSError as err:  # e.g. a name too long for a path
            raise ValueError(f"checkpoint {value[:80]!r}...: {err.strerror}") from None
        return value


class SchedulerSpec(_Strict):
    """A scheduler variant: a label, a registry type and config overrides."""

    name: str = Field(min_length=1)
    type: str | None = None  # registry name; defaults to `name`
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "SchedulerSpec":
        try:
            check_options(self.kind, self.options)
        except SchedulerError as err:
            raise ValueError(str(err)) from None
        return self

    @property
    def kind(self) -> str:
        """The registry name of the scheduler class."""
        return self.type or self.name


# Documented ranges (README, "Sweep files"): wide enough for any real study, narrow enough that
# a typo (1e308 seconds, 2**63 steps) is refused when the file is read instead of failing
# every sample later.
MAX_STEPS = 1000  # the checkpoints' schedulers have 1000 training timesteps; set_timesteps refuses more
MAX_GUIDANCE = 100.0
MAX_AUDIO_LENGTH_S = 600.0
MAX_BATCH_SIZE = 1024
MAX_SEED = 2**63 - 1  # SQLite's INTEGER range (torch.Generator accepts up to 2**64 - 1)


class PromptsSpec(_Strict):
    """Which prompt set to use, and optionally how many of its prompts."""

    set: str = Field(min_length=1)
    limit: int | None = Field(default=None, gt=0, le=MAX_SEED)


class LatencySpec(_Strict):
    """The latency protocol of ``bench``: warm-up calls, timed repetitions, memory pass, batches."""

    warmup: int = Field(default=1, ge=1, le=1000)
    repeats: int = Field(default=5, ge=2, le=100_000)
    memory: bool = True
    batch_sizes: list[int] | None = Field(default=None, min_length=1)  # None: the sweep's batch_size

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is None:
            return None
        return _unique([_in_range(v, "latency.batch_sizes", 1, MAX_BATCH_SIZE) for v in values],
                       "latency.batch_sizes")


def _unique(values: list, key: str) -> list:
    seen, dupes = set(), []
    for v in values:
        label = v.name if isinstance(v, SchedulerSpec) else v.id if isinstance(v, CheckpointSpec) else v
        if label in seen:
            dupes.append(label)
        seen.add(label)
    if dupes:
        raise ValueError(f"duplicate entries in {key}: {', '.join(map(repr, dupes))}")
    return values


# The numeric axes of the grid: (low, high, low excluded); values outside and repeats are refused.
_AXIS_BOUNDS = {
    "steps": (1, MAX_STEPS, False),
    "audio_lengths_s": (0, MAX_AUDIO_LENGTH_S, True),
    "guidance_scales": (0, MAX_GUIDANCE, False),
    "seeds": (0, MAX_SEED, False),
}


class SweepSpec(_Strict):
    """A whole sweep file: the grid, the prompts, the seeds and runtime settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    checkpoints: list[CheckpointSpec] = Field(min_length=1)
    dtypes: list[Dtype] = Field(default=["fp32"], min_length=1)
    schedulers: list[SchedulerSpec] = Field(default_factory=lambda: [SchedulerSpec(name="ddim")], min_length=1)
    steps: list[int] = Field(default=[200], min_length=1)
    guidance_scales: list[float] = Field(default=[3.5], min_length=1)
    negative_prompts: list[str] = Field(default=[""], min_length=1)
    audio_lengths_s: list[float] = Field(default=[10.24], min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    prompts: PromptsSpec
    latency: LatencySpec = Field(default_factory=LatencySpec)
    attention_backends: list[AttentionBackend] = Field(default=["sdpa"], min_length=1)
    compile_modes: list[CompileMode] = Field(default=["none"], min_length=1)
    cpu_offload: list[bool] = Field(default=[False], min_length=1)
    vae_slicing: list[bool] = Field(default=[False], min_length=1)
    vae_tiling: list[bool] = Field(default=[False], min_length=1)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    batch_size: int = Field(default=1, gt=0, le=MAX_BATCH_SIZE)
    # torch's CPU threads (None: torch's default, one per core); not part of cell ids.
    threads: int | None = Field(default=None, gt=0, le=1024)
    allow_unsafe_schedulers: bool = False

    @field_validator("checkpoints", "schedulers", mode="before")
    @classmethod
    def _strings_to_tables(cls, values: Any, info) -> Any:
        field = "id" if info.field_name == "checkpoints" else "name"
        if not isinstance(values, list):
            return values
        return [{field: v} if isinstance(v, str) else v for v in values]

    @field_validator(*_AXIS_BOUNDS)
    @classmethod
    def _bounded_axes(cls, values: list, info) -> list:
        low, high, low_open = _AXIS_BOUNDS[info.field_name]
        return _unique([_in_range(v, info.field_name, low, high, low_open) for v in values], info.field_name)

    @field_validator("checkpoints", "schedulers", "dtypes", "negative_prompts", "attention_backends",
                     "compile_modes", "cpu_offload", "vae_slicing", "vae_tiling")
    @classmethod
    def _no_duplicates(cls, values: list, info) -> list:
        return _unique(values, info.field_name)

    @model_validator(mode="after")
    def _scheduler_policy(self) -> "SweepSpec":
        for s in self.schedulers:
            least = get_entry(s.kind).minimum_steps(s.options)
            if min(self.steps) < least:
                raise ValueError(
                    f"scheduler {s.name!r} needs steps >= {least}, but steps has {min(self.steps)}"
                )
            if get_entry(s.kind).opt_in and not self.allow_unsafe_schedulers:
                raise ValueError(
                    f"scheduler {s.kind!r} is refused ({get_entry(s.kind).description}); "
                    "set allow_unsafe_schedulers = true to run it anyway"
                )
        return self


def _in_range(value: float, key: str, low: float, high: float, low_open: bool = False) -> float:
    if value < low or (low_open and value == low) or value > high:
        bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        raise ValueError(f"every value of {key} must be {bound}, got {value}")
    return value


class Cell(_Strict):
    """One point of the sweep; everything that changes a sample's audio except prompt and seed."""

    checkpoint: str
    revision: str | None
    dtype: Dtype
    device: str
    scheduler: str
    scheduler_type: str
    scheduler_options: dict[str, Any]
    steps: int
    guidance_scale: float
    negative_prompt: str
    audio_length_s: float
    max_new_tokens: int | None  # None: the language model config's default (a checkpoint unknown here)
    runtime: RuntimeOptions
    versions: dict[str, str]

    @functools.cached_property
    def id(self) -> str:
        """Stable id: sha256 of the canonical JSON (versions included), first 16 hex digits.

        Cached: planning asks it once per sample (a million times in a large sweep)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def canonical_json(self) -> str:
        """Key-sorted, whitespace-free JSON of every field."""
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    @property
    def load_key(self) -> tuple:
        """Cells sharing this key share one loaded pipeline."""
        return (self.checkpoint, self.revision, self.dtype, self.device, self.runtime)

    @property
    def label(self) -> str:
        """Short human-readable description for tables and progress bars."""
        return f"{Path(self.checkpoint).name}/{self.scheduler}/{self.steps}st/g{self.guidance_scale:g}"


def expand(spec: SweepSpec, device: str) -> list[Cell]:
    """All cells of the grid, in an order that keeps cells sharing a pipeline adjacent."""
    versions = output_versions()
    grid = itertools.product(
        spec.checkpoints, spec.dtypes, runtime_variants(spec), spec.schedulers, spec.steps,
        spec.guidance_scales, spec.negative_prompts, spec.audio_lengths_s,
    )
    return [
        Cell(
            checkpoint=ck.id, revision=ck.revision, dtype=dt, device=device, scheduler=sc.name,
            scheduler_type=sc.kind, scheduler_options=sc.options, steps=st, guidance_scale=float(g),
            negative_prompt=neg, audio_length_s=float(length),
            max_new_tokens=ck.max_new_tokens or describe(ck.id).max_new_tokens, runtime=rt, versions=versions,
        )
        for ck, dt, rt, sc, st, g, neg, length in grid
    ]


def runtime_variants(spec: SweepSpec) -> list[RuntimeOptions]:
    """Every combination of the sweep's runtime-option lists."""
    return [
        RuntimeOptions(attention_backend=a, compile=c, cpu_offload=o, vae_slicing=s, vae_tiling=t)
        for a, c, o, s, t in itertools.product(
            spec.attention_backends, spec.compile_modes, spec.cpu_offload, spec.vae_slicing, spec.vae_tiling
        )
    ]


def read_toml(path: str | Path, what: str, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed one raises ``error`` with one line naming it."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what} file") from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise error(f"{path}: not UTF-8 text (byte {err.start}, line {line}: {err.reason}); "
                    f"TOML files must be UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise error(one_line(f"{path}: invalid TOML: {err}")) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and inline tables
        raise error(f"{path}: nested deeper than the TOML reader can follow (at most {MAX_DEPTH} levels "
                    "of tables/arrays are allowed)") from None
    problem = tree_problem(data)
    if problem:
        raise error(f"{path}: {problem}")
    return data


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep TOML file; any problem is a one-line ConfigError."""
    return parse_spec(read_toml(path, "sweep"), source=str(path))


def parse_spec(data: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    """Validate an already-parsed sweep mapping."""
    problem = tree_problem(data)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(one_line(f"{source}: {_first_error(err)}")) from None


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        parent = _model_at(e["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see the README"
        return f"unknown key {loc!r}; allowed keys here: {allowed}"
    if e["type"] == "literal_error":
        return f"{loc}: {e['msg']} (got {e['input']!r})"
    if e["type"] == "missing":
        return f"missing required key {loc!r}"
    return first_error(err)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = SweepSpec
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not None]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model

"""Which checkpoints the harness knows: the five published ones, the built-in tiny ones, and
any local folder in diffusers format. Adding a published checkpoint is adding an entry here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError

Task = Literal["audio", "music", "speech"]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is for and what inputs a call needs."""

    id: str
    task: Task
    description: str
    needs_transcription: bool = False
    # GPT-2 tokens generated per prompt; None: unknown here, the language model config's default
    max_new_tokens: int | None = None
    builtin: bool = False  # built by the harness itself, no download


def _speech(id_: str, description: str) -> CheckpointInfo:
    # The speech checkpoints were trained with 512 generated tokens (diffusers docs, model cards).
    return CheckpointInfo(id_, "speech", description, needs_transcription=True, max_new_tokens=512)


PUBLISHED: dict[str, CheckpointInfo] = {
    c.id: c
    for c in [
        # 8: their language_model/config.json max_new_tokens (sequence_gen_length of the originals)
        CheckpointInfo("cvssp/audioldm2", "audio", "AudioLDM 2 full: text-to-audio, 1.1B params", max_new_tokens=8),
        CheckpointInfo("cvssp/audioldm2-large", "audio", "AudioLDM 2 full-large: 718M UNet", max_new_tokens=8),
        CheckpointInfo("cvssp/audioldm2-music", "music", "AudioLDM 2 music: text-to-music", max_new_tokens=8),
        _speech("anhnct/audioldm2_gigaspeech", "AudioLDM 2 speech, GigaSpeech (VITS text encoder)"),
        _speech("anhnct/audioldm2_ljspeech", "AudioLDM 2 speech, LJSpeech (VITS text encoder)"),
    ]
}

BUILTIN: dict[str, CheckpointInfo] = {
    "tiny-audio": CheckpointInfo(
        "tiny-audio", "audio", "built-in tiny text-to-audio pipeline (CLAP + T5), random weights",
        max_new_tokens=8, builtin=True,
    ),
    "tiny-speech": CheckpointInfo(
        "tiny-speech", "speech",
        "built-in tiny speech pipeline (CLAP + VITS), random weights; 64 GPT-2 tokens (not 512) for speed",
        needs_transcription=True, max_new_tokens=64, builtin=True,
    ),
}


RANDOM_PREFIX = "random:"

# Random weights with exactly a published architecture (random_full.py): latency and memory
# without a download. Same task and call-time inputs as the checkpoint they copy.
BUILTIN.update(
    {
        RANDOM_PREFIX + c.id: CheckpointInfo(
            RANDOM_PREFIX + c.id, c.task,
            f"random weights, architecture of {c.id} (no download; for latency and memory)",
            needs_transcription=c.needs_transcription, max_new_tokens=c.max_new_tokens,
            builtin=True,
        )
        for c in PUBLISHED.values()
    }
)


class CheckpointError(HarnessError, ValueError):
    """A checkpoint that cannot be found or loaded; the message says where we looked and what to do."""


def is_local_folder(name: str) -> bool:
    """A local diffusers-format pipeline folder (has model_index.json)."""
    return (Path(name).expanduser() / "model_index.json").is_file()


def describe(name: str) -> CheckpointInfo:
    """Info for a published or built-in id, or one inferred from a local folder's model_index.json."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in PUBLISHED:
        return PUBLISHED[name]
    if is_local_folder(name):
        return _describe_local(Path(name).expanduser())
    if _HUB_ID.match(name) and not Path(name).expanduser().exists():
        # Any other hub id in diffusers format is allowed (loaded lazily); assume text-to-audio.
        return CheckpointInfo(name, "audio", "hub checkpoint (not in the registry)")
    folder = Path(name).expanduser()
    if folder.is_dir():
        raise CheckpointError(f"checkpoint folder {name} has no model_index.json: not a diffusers pipeline folder")
    if _looks_like_path(name):
        raise CheckpointError(f"checkpoint folder {name} does not exist; give an existing diffusers pipeline "
                              "folder or a hub id (owner/name)")
    raise CheckpointError(
        f"checkpoint {name!r} is neither a known id ({', '.join([*BUILTIN, *PUBLISHED])}), "
        "a hub id (owner/name) nor a folder with model_index.json"
    )


# Hugging Face repo ids: owner/name, letters, digits, '-', '_' and '.', no leading separator.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _describe_local(folder: Path) -> CheckpointInfo:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{folder / 'model_index.json'} is not valid JSON ({type(err).__name__}); "
                              "rebuild or re-download the checkpoint") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{folder / 'model_index.json'} is not a JSON object; rebuild or re-download it")
    if index.get("_class_name") != "AudioLDM2Pipeline":
        raise CheckpointError(
            f"{folder} holds a {index.get('_class_name')!r}, not an AudioLDM2Pipeline"
        )
    if index.get("text_encoder_2", [None, None])[1] == "VitsModel":
        return _speech(str(folder), "local speech checkpoint (VITS text encoder)")
    return CheckpointInfo(str(folder), "audio", "local checkpoint", max_new_tokens=_config_max_new_tokens(folder))


def _config_max_new_tokens(folder: Path) -> int | None:
    """The pipeline's default for a local folder: its language model config's max_new_tokens."""
    config = folder / "language_model" / "config.json"
    try:
        value = json.loads(config.read_text()).get("max_new_tokens")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None

"""A stored sample is reproduced by a bare diffusers call built from its cell row alone (the
README's recipe), for both families; max_new_tokens is a stored, sweepable cell setting."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from harness.generate.run import run_sweep
from harness.spec import parse_spec, expand


def _folder(checkpoint: str):
    from harness.checkpoints.tiny import tiny_checkpoint_path

    return tiny_checkpoint_path(checkpoint.removeprefix("tiny-")) if checkpoint.startswith("tiny-") else checkpoint


def reproduce(run_dir, cell_id: str, prompt_id: str, seed: int, **override) -> tuple[np.ndarray, np.ndarray]:
    """The README recipe: (stored audio, bare diffusers audio) of one sample (``override``: call keywords)."""
    import diffusers
    from harness.generate.language_model import patch_pipeline
    from harness.schedulers import get_entry

    db = sqlite3.connect(run_dir / "run.sqlite")
    db.row_factory = sqlite3.Row
    cell = db.execute("SELECT * FROM cells WHERE id=?", (cell_id,)).fetchone()
    sample = db.execute("SELECT * FROM samples WHERE cell_id=? AND prompt_id=? AND seed=?",
                        (cell_id, prompt_id, seed)).fetchone()
    pipe = diffusers.AudioLDM2Pipeline.from_pretrained(_folder(cell["checkpoint"]), revision=cell["revision"])
    patch_pipeline(pipe)
    scheduler_cls = getattr(diffusers, get_entry(cell["scheduler_type"]).class_name)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **json.loads(cell["scheduler_options"]))
    settings = {"max_new_tokens": cell["max_new_tokens"], **override}
    audio = pipe(
        sample["prompt"], transcription=sample["transcription"],
        negative_prompt=cell["negative_prompt"] or None, num_inference_steps=cell["steps"],
        guidance_scale=cell["guidance_scale"], audio_length_in_s=cell["audio_length_s"],
        generator=torch.Generator("cpu").manual_seed(seed), **settings,
    ).audios[0]
    stored = wavfile.read(run_dir / sample["audio_path"])[1]
    return stored, audio


@pytest.fixture(scope="module")
def two_families(tmp_path_factory, sweep_writer):
    folder = tmp_path_factory.mktemp("reproduce")
    config = sweep_writer(folder / "sweep.toml", checkpoints=["tiny-audio", "tiny-speech"], seeds=[3],
                          negative_prompts=["low quality"], prompts={"set": "smoke"}, batch_size=1)
    run_sweep(config, folder / "run", progress=False)
    return folder / "run"


@pytest.mark.parametrize("checkpoint", ["tiny-audio", "tiny-speech"])
def test_stored_sample_is_reproduced_from_the_cell_row(two_families, checkpoint):
    db = sqlite3.connect(two_families / "run.sqlite")
    cell_id, max_new, prompt_id = db.execute(
        "SELECT c.id, c.max_new_tokens, s.prompt_id FROM cells c JOIN samples s ON s.cell_id=c.id "
        "WHERE c.checkpoint=? AND s.status='ok' ORDER BY s.prompt_id LIMIT 1", (checkpoint,)).fetchone()
    assert max_new == {"tiny-audio": 8, "tiny-speech": 64}[checkpoint]
    stored, bare = reproduce(two_families, cell_id, prompt_id, 3)
    diff = float(np.abs(stored - bare).max())
    print(f"{checkpoint}: max abs difference {diff:.3g}")
    assert stored.shape == bare.shape and diff <= 1e-6


def test_speech_needs_its_max_new_tokens(two_families):
    # Without the stored value the pipeline falls back to GPT-2's config default (8): another sample.
    db = sqlite3.connect(two_families / "run.sqlite")
    cell_id, prompt_id = db.execute(
        "SELECT c.id, s.prompt_id FROM cells c JOIN samples s ON s.cell_id=c.id "
        "WHERE c.checkpoint='tiny-speech' AND s.status='ok' ORDER BY s.prompt_id LIMIT 1").fetchone()
    stored, bare = reproduce(two_families, cell_id, prompt_id, 3, max_new_tokens=None)
    assert np.abs(stored - bare).max() > 1e-4


def test_max_new_tokens_is_a_cell_setting():
    def cells(**checkpoint):
        spec = parse_spec({"name": "t", "checkpoints": [{"id": "tiny-speech", **checkpoint}],
                           "prompts": {"set": "smoke"}})
        return expand(spec, "cpu")

    default, = cells()
    custom, = cells(max_new_tokens=32)
    assert default.max_new_tokens == 64 and custom.max_new_tokens == 32
    assert default.id != custom.id
    with pytest.raises(Exception, match="max_new_tokens"):
        cells(max_new_tokens=0)


def test_folder_from_before_the_column_gets_it(tmp_path):
    import harness.store as store_module
    from harness.store import RunStore

    old_schema = store_module.SCHEMA.replace(
        "    max_new_tokens INTEGER,      -- GPT-2 tokens per prompt; NULL: the language model config's default\n", "")
    assert old_schema != store_module.SCHEMA
    db = sqlite3.connect(tmp_path / "run.sqlite")
    db.executescript(old_schema)
    with db:  # as the harness wrote it before the column existed
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(store_module.SCHEMA_VERSION),))
    db.close()
    store = RunStore(tmp_path)
    assert "max_new_tokens" in store.table_columns("cells")
    spec = parse_spec({"name": "t", "checkpoints": ["tiny-speech"], "prompts": {"set": "smoke"}})
    cell, = expand(spec, "cpu")
    store.add_cells([cell], {})
    assert store.db.execute("SELECT max_new_tokens FROM cells").fetchone()[0] == 64

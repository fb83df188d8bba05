"""Tests for harness.data.prompts: formats, ordering, limit, errors, fingerprint, built-ins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.data.prompts import (
    DATASETS_ENV,
    Prompt,
    PromptSet,
    PromptSetError,
    available_prompt_sets,
    load_prompt_set,
)

FIXTURES = Path(__file__).parent / "fixtures"
AUDIOCAPS = FIXTURES / "audiocaps_small.csv"
MUSICCAPS = FIXTURES / "musiccaps_small.csv"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a small file for one error case."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(spec: str, **kwargs) -> str:
    """Load a spec that must fail; return the single-line message."""
    with pytest.raises(PromptSetError) as info:
        load_prompt_set(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- formats


def test_audiocaps_picks_smallest_id_per_clip_and_orders_by_it():
    prompts = load_prompt_set(f"audiocaps:{AUDIOCAPS}").prompts
    # clipAAAAAAA's first row in the file is 205, but 17 is smallest; -clipBBBBBB has 104 and 9,
    # which string comparison would get wrong.
    assert [(p.id, p.text, p.source) for p in prompts] == [
        ("audiocaps-clipCCCCCCC", "Wind blows, then a door slams", "audiocaps:3"),
        ("audiocaps--clipBBBBBB", "Rain falls steadily on a roof", "audiocaps:9"),
        ("audiocaps-clipAAAAAAA", "A dog is barking outside", "audiocaps:17"),
    ]
    assert all(p.transcription is None for p in prompts)


def test_musiccaps_one_prompt_per_row_in_file_order():
    prompt_set = load_prompt_set(f"musiccaps:{MUSICCAPS}")
    assert [p.id for p in prompt_set.prompts] == [
        "musiccaps--0Gj8-vBaaa", "musiccaps-0bbbbbbbbbb", "musiccaps-Zccccccccc1",
    ]
    # The quoted caption spans two lines in the file; whitespace is collapsed.
    assert prompt_set.prompts[1].text == "A loud rock song with heavy drums and distorted guitars."
    assert prompt_set.prompts[0].source == "musiccaps:-0Gj8-vBaaa"


def test_musiccaps_eval_keeps_only_audioset_eval_rows():
    prompt_set = load_prompt_set(f"musiccaps-eval:{MUSICCAPS}")
    assert [p.id for p in prompt_set.prompts] == ["musiccaps--0Gj8-vBaaa", "musiccaps-Zccccccccc1"]


def test_jsonl_reads_optional_fields_and_skips_blank_lines():
    prompt_set = load_prompt_set(str(FIXTURES / "custom.jsonl"))
    assert prompt_set.name == "custom"
    assert [p.id for p in prompt_set.prompts] == ["a", "b", "c"]
    assert prompt_set.prompts[1].transcription == "hello there"
    assert prompt_set.prompts[2].source == "handwritten"
    assert prompt_set.prompts[0].transcription is None


def test_csv_keeps_id_strings_and_blank_transcription_is_none():
    prompts = load_prompt_set(str(FIXTURES / "custom.csv")).prompts
    assert prompts[0].id == "007"  # dtype=str: no int conversion eating the zeros
    assert prompts[0].transcription is None
    assert prompts[1].transcription == "hello there"


# ---------------------------------------------------------------- limit


def test_limit_takes_first_n_after_ordering():
    limited = load_prompt_set(f"audiocaps:{AUDIOCAPS}", limit=2)
    assert [p.id for p in limited.prompts] == ["audiocaps-clipCCCCCCC", "audiocaps--clipBBBBBB"]
    assert len(load_prompt_set(f"audiocaps:{AUDIOCAPS}", limit=99)) == 3


def test_limit_below_one_is_an_error():
    assert "limit" in _error(f"audiocaps:{AUDIOCAPS}", limit=0)


def test_limit_does_not_hide_errors_later_in_the_file(tmp_path):
    path = _write(tmp_path, "p.jsonl", '{"id": "a", "text": "ok"}\n{"id": "b", "text": ""}\n')
    assert "empty caption" in _error(str(path), limit=1)


# ---------------------------------------------------------------- errors


def test_unknown_builtin_lists_available_sets():
    message = _error("no-such-set")
    assert "unknown prompt set 'no-such-set'" in message
    assert "smoke" in message


def test_unknown_prefix_is_unknown_set():
    assert "unknown prompt set" in _error("clotho:/tmp/x.tsv")


def test_missing_file(tmp_path):
    missing = tmp_path / "absent.csv"
    message = _error(f"audiocaps:{missing}")
    assert "not found" in message and str(missing) in message
    assert "not found" in _error(str(tmp_path / "absent.jsonl"))


def test_prefix_without_path():
    assert "no path" in _error("musiccaps:")


def test_missing_columns_named_with_found_columns(tmp_path):
    path = _write(tmp_path, "ac.csv", "audiocap_id,ytid,text\n1,x,a dog\n")
    message = _error(f"audiocaps:{path}")
    assert "missing required column(s) youtube_id, caption" in message
    assert "found: audiocap_id, ytid, text" in message


def test_generic_csv_unknown_column_is_named(tmp_path):
    path = _write(tmp_path, "p.csv", "id,text,transcripton\na,b,c\n")
    assert "unknown column(s) transcripton" in _error(str(path))


def test_empty_file_and_header_only_are_empty_sets(tmp_path):
    assert "empty" in _error(str(_write(tmp_path, "e.jsonl", "\n\n")))
    assert "is empty" in _error(str(_write(tmp_path, "h.csv", "id,text\n")))
    assert "cannot parse" in _error(str(_write(tmp_path, "z.csv", "")))


def test_musiccaps_eval_with_no_eval_rows_is_empty(tmp_path):
    path = _write(tmp_path, "m.csv", "ytid,caption,is_audioset_eval\nabc,A song,False\n")
    assert "is empty" in _error(f"musiccaps-eval:{path}")


def test_musiccaps_eval_bad_flag_names_row(tmp_path):
    path = _write(tmp_path, "m.csv", "ytid,caption,is_audioset_eval\nabc,A song,yes\n")
    message = _error(f"musiccaps-eval:{path}")
    assert "data row 1" in message and "'yes'" in message


def test_empty_caption_names_row_and_id(tmp_path):
    path = _write(tmp_path, "m.csv", "ytid,caption\nabc,A song\ndef,   \n")
    message = _error(f"musiccaps:{path}")
    assert "data row 2" in message and "musiccaps-def" in message and "empty caption" in message


def test_empty_caption_in_unchosen_audiocaps_row_is_still_an_error(tmp_path):
    path = _write(tmp_path, "ac.csv", "audiocap_id,youtube_id,caption\n1,x,a dog\n2,x,\n")
    assert "empty caption" in _error(f"audiocaps:{path}")


def test_non_integer_audiocap_id(tmp_path):
    path = _write(tmp_path, "ac.csv", "audiocap_id,youtube_id,caption\nabc,x,a dog\n")
    assert "audiocap_id 'abc' is not a whole number" in _error(f"audiocaps:{path}")


def test_repeated_audiocap_id(tmp_path):
    path = _write(tmp_path, "ac.csv", "audiocap_id,youtube_id,caption\n5,x,a dog\n5,y,a cat\n")
    assert "repeats audiocap_id(s) 5" in _error(f"audiocaps:{path}")


def test_duplicate_ids_are_named(tmp_path):
    path = _write(tmp_path, "m.csv", "ytid,caption\nabc,A song\nxyz,B\nabc,Another\n")
    message = _error(f"musiccaps:{path}")
    assert "duplicate ids: musiccaps-abc" in message and "xyz" not in message


def test_empty_id_in_csv(tmp_path):
    path = _write(tmp_path, "p.csv", "id,text\n ,A cat\n")
    assert "empty id" in _error(str(path))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "b", "text": "x"', "invalid JSON"),
        ('["b", "x"]', "expected a JSON object"),
        ('{"id": "b", "text": "x", "transcript": "y"}', "unknown key(s) transcript"),
        ('{"id": 2, "text": "x"}', "'id' must be a string"),
        ('{"id": "b"}', "empty caption"),
    ],
)
def test_bad_jsonl_line_names_line_number(tmp_path, line, expected):
    path = _write(tmp_path, "p.jsonl", '{"id": "a", "text": "fine"}\n\n' + line + "\n")
    message = _error(str(path))
    assert "line 3" in message and expected in message


def test_not_utf8_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    assert "UTF-8" in _error(str(path))


def test_models_reject_bad_sets_directly():
    with pytest.raises(ValueError, match="empty"):
        Prompt(id="a", text="   ")
    with pytest.raises(ValueError, match="duplicate ids: a"):
        PromptSet(name="x", prompts=(Prompt(id="a", text="t"), Prompt(id="a", text="u")))
    with pytest.raises(ValueError, match="is empty"):
        PromptSet(name="x", prompts=())


# ---------------------------------------------------------------- fingerprint and subsets


def _set(*texts: str) -> PromptSet:
    """A set whose ids are positions and texts are given."""
    return PromptSet(name="s", prompts=tuple(Prompt(id=str(i), text=t) for i, t in enumerate(texts)))


def test_fingerprint_is_stable_and_content_sensitive():
    base = _set("a dog barks", "rain falls")
    assert re.fullmatch(r"[0-9a-f]{64}", base.fingerprint)
    assert base.fingerprint == _set("a dog barks", "rain falls").fingerprint


def test_fingerprint_changes_with_caption_and_order_not_name():
    base = _set("a dog barks", "rain falls")
    assert base.fingerprint != _set("a dog barks", "rain falls hard").fingerprint
    assert base.fingerprint != _set("rain falls", "a dog barks").fingerprint
    assert base.fingerprint == base.model_copy(update={"name": "other"}).fingerprint
    with_words = PromptSet(name="s", prompts=(Prompt(id="0", text="a dog barks", transcription="hi"),
                                              Prompt(id="1", text="rain falls")))
    assert base.fingerprint != with_words.fingerprint


def test_fingerprint_of_loaded_file_is_reproducible():
    first = load_prompt_set(f"audiocaps:{AUDIOCAPS}").fingerprint
    assert first == load_prompt_set(f"audiocaps:{AUDIOCAPS}").fingerprint
    assert first != load_prompt_set(f"audiocaps:{AUDIOCAPS}", limit=2).fingerprint


def test_with_transcription_keeps_only_speech_prompts():
    speech = load_prompt_set(str(FIXTURES / "custom.jsonl")).with_transcription()
    assert [p.id for p in speech.prompts] == ["b"]
    assert speech.name == "custom[transcription]"


def test_with_transcription_on_set_without_any_is_an_error():
    with pytest.raises(PromptSetError, match="no prompts with a transcription"):
        load_prompt_set(f"audiocaps:{AUDIOCAPS}").with_transcription()


def test_prompts_are_frozen():
    prompt_set = load_prompt_set("smoke")
    with pytest.raises(ValueError):
        prompt_set.prompts[0].text = "changed"  # type: ignore[misc]


# ---------------------------------------------------------------- built-ins


def test_smoke_set_loads_with_speech_prompts():
    assert "smoke" in available_prompt_sets()
    smoke = load_prompt_set("smoke")
    assert smoke.name == "smoke"
    assert 6 <= len(smoke) <= 12
    speech = smoke.with_transcription()
    assert len(speech) >= 3
    assert all(re.fullmatch(r"[a-z ,.'?!]+", p.transcription or "") for p in speech.prompts)
    prefixes = {p.id.split("-")[0] for p in smoke.prompts}
    assert {"sfx", "music", "speech"} <= prefixes


def test_datasets_env_var_overrides_builtin_folder(tmp_path, monkeypatch):
    (tmp_path / "prompts").mkdir()
    _write(tmp_path / "prompts", "mine.jsonl", '{"id": "x", "text": "A bell rings"}\n')
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    assert available_prompt_sets() == ["mine"]
    assert load_prompt_set("mine").prompts[0].text == "A bell rings"
    assert "built-in sets: mine" in _error("smoke")


# ---------------------------------------------------------------- speech prompt sets

LJSPEECH = FIXTURES / "ljspeech" / "metadata.csv"


def test_ljspeech_uses_normalized_text_and_the_voice_description():
    from harness.data.prompts import LJSPEECH_VOICE

    prompts = load_prompt_set(f"ljspeech:{LJSPEECH}").prompts
    assert [p.id for p in prompts] == ["ljspeech-LJ900-0001", "ljspeech-LJ900-0002", "ljspeech-LJ900-0003"]
    assert prompts[1].transcription == 'The "old" mill was built in eighteen fifty-five by Doctor Hale'
    assert prompts[2].source == "ljspeech:LJ900-0003"
    assert {p.text for p in prompts} == {LJSPEECH_VOICE}


def test_ljspeech_voice_is_configurable():
    prompts = load_prompt_set(f"ljspeech:{LJSPEECH}?voice=A man whispers", limit=1).prompts
    assert prompts[0].text == "A man whispers"
    with pytest.raises(PromptSetError, match=r"only option is \?voice=TEXT"):
        load_prompt_set(f"ljspeech:{LJSPEECH}?speaker=x")


@pytest.mark.parametrize(("line", "message"), [
    ("LJ1|only two fields", "2 '|'-separated fields, expected 3"),
    ("LJ1|text|", "empty normalized text"),
    ("|text|words", "empty id"),
])
def test_ljspeech_bad_lines_are_one_line_errors(tmp_path, line, message):
    path = tmp_path / "metadata.csv"
    path.write_text("LJ0|a|a\n" + line + "\n")
    with pytest.raises(PromptSetError, match=message) as err:
        load_prompt_set(f"ljspeech:{path}")
    assert "line 2" in str(err.value) and "\n" not in str(err.value)


def test_jsonl_pairs_voice_descriptions_with_transcriptions():
    prompts = load_prompt_set(str(FIXTURES / "speech_prompts.jsonl")).with_transcription().prompts
    assert [(p.text, p.transcription) for p in prompts][1] == (
        "A man speaks slowly and calmly", "Please close the door behind you.")

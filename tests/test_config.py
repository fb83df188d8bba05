"""Sweep files: validation messages, expansion and cell identity."""

from __future__ import annotations

import pytest

from harness.spec import ConfigError, expand, load_spec, parse_spec

BASE = {"name": "t", "checkpoints": ["tiny-audio"], "prompts": {"set": "smoke"}}


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ({"stepz": [10]}, ["unknown key 'stepz'", "steps"]),
        ({"steps": [0]}, ["steps", ">= 1"]),
        ({"steps": [10, 10]}, ["duplicate", "steps"]),
        ({"audio_lengths_s": [-1.0]}, ["audio_lengths_s", "> 0"]),
        ({"guidance_scales": [-2.0]}, ["guidance_scales", ">= 0"]),
        ({"seeds": [-1]}, ["seeds", ">= 0"]),
        ({"schedulers": ["nope"]}, ["unknown scheduler 'nope'", "ddim", "dpmsolver++"]),
        ({"schedulers": ["ddim", {"name": "ddim"}]}, ["duplicate", "'ddim'"]),
        ({"schedulers": [{"name": "k", "type": "dpmsolver++", "options": {"use_karras_sigmas": "yes"}}]},
         ["use_karras_sigmas", "bool", "'yes'"]),
        ({"schedulers": [{"name": "k", "type": "dpmsolver++", "options": {"algorithm_type": "x"}}]},
         ["algorithm_type", "'dpmsolver++'", "'sde-dpmsolver++'"]),
        ({"schedulers": [{"name": "k", "type": "ddim", "options": {"karras": True}}]},
         ["no option 'karras'", "timestep_spacing"]),
        ({"schedulers": ["pndm"], "steps": [3, 10]}, ["'pndm' needs steps >= 4", "3"]),
        ({"schedulers": ["edm-euler"]}, ["edm-euler", "allow_unsafe_schedulers"]),
        ({"dtypes": ["fp8"]}, ["dtypes", "'fp32'", "'fp8'"]),
        ({"checkpoints": []}, ["checkpoints", "at least 1"]),
        ({"checkpoints": ["not-a-checkpoint"]}, ["not-a-checkpoint", "tiny-audio", "cvssp/audioldm2"]),
        ({"prompts": {"set": "smoke", "lim": 2}}, ["unknown key 'prompts.lim'", "limit"]),
        ({"prompts": {"set": "smoke", "limit": 0}}, ["prompts.limit"]),
        ({"device": "tpu"}, ["device"]),
        ({"batch_size": 0}, ["batch_size"]),
        ({"name": "has space"}, ["name"]),
        # issue 17: values that used to be accepted (and then failed every sample or lost cells)
        ({"guidance_scales": [float("nan")]}, ["guidance_scales[0]", "not a finite number"]),
        ({"guidance_scales": [float("inf")]}, ["guidance_scales[0]", "not a finite number"]),
        ({"audio_lengths_s": [float("nan")]}, ["audio_lengths_s[0]", "not a finite number"]),
        ({"audio_lengths_s": [1e308]}, ["audio_lengths_s", "<= 600"]),
        ({"guidance_scales": [1e6]}, ["guidance_scales", "<= 100"]),
        ({"steps": [2**63 - 1]}, ["steps", "<= 1000"]),
        ({"seeds": [2**63]}, ["seeds[0]", "64-bit range"]),
        ({"seeds": [10**400]}, ["seeds[0]", "64-bit range", "bits"]),
        ({"batch_size": 10**6}, ["batch_size", "1024"]),
        # strict types: no coercion
        ({"steps": [True]}, ["steps[0]", "valid integer", "True"]),
        ({"steps": ["2"]}, ["steps[0]", "valid integer", "'2'"]),
        ({"steps": [2.0]}, ["steps[0]", "valid integer"]),
        ({"cpu_offload": [1]}, ["cpu_offload[0]", "valid boolean"]),
        ({"guidance_scales": [True]}, ["guidance_scales[0]", "valid number"]),
        ({"prompts": {"set": "smoke", "limit": "3"}}, ["prompts.limit", "valid integer"]),
        # scheduler options: what TOML can express, and checked
        ({"schedulers": [{"name": "b", "type": "ddim", "options": {"trained_betas": [0.1, 0.2]}}]},
         ["trained_betas", "1000 values, got 2"]),
        ({"schedulers": [{"name": "b", "type": "ddim", "options": {"trained_betas": "x"}}]},
         ["trained_betas", "list[float]"]),
        ({"schedulers": [{"name": "u", "type": "unipc", "options": {"solver_p": "ddim"}}]},
         ["solver_p", "cannot express"]),
        ({"schedulers": [{"name": "k", "type": "ddim", "options": {"steps_offset": 2**64}}]},
         ["options.steps_offset", "64-bit range"]),
        # local checkpoint folders must exist; hub ids still load lazily
        ({"checkpoints": ["/nonexistent/folder"]}, ["/nonexistent/folder", "does not exist"]),
        ({"checkpoints": ["./relative/ckpt"]}, ["./relative/ckpt", "does not exist"]),
        # nesting and control characters
        ({"description": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, ["nested deeper"]),
        ({"bad\nkey": 1}, ["unknown key", "bad\\nkey"]),
    ],
)
def test_bad_input_is_one_line_naming_the_key(override, needles):
    with pytest.raises(ConfigError) as info:
        parse_spec({**BASE, **override}, source="sweep.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("sweep.toml: ")
    for needle in needles:
        assert needle in message


def test_hub_ids_still_load_lazily_and_a_folder_without_an_index_is_named(tmp_path):
    assert parse_spec({**BASE, "checkpoints": ["someone/some-model"]}).checkpoints[0].id == "someone/some-model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no model_index.json"):
        parse_spec({**BASE, "checkpoints": [str(tmp_path / "empty")]})


def test_non_utf8_and_deeply_nested_files_are_one_line_errors_naming_the_file(tmp_path):
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('name = "t"\ndescription = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text \(byte 29, line 2"):
        load_spec(latin)
    for text in ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 3000 + "1" + "}" * 3000]:
        deep = tmp_path / "deep.toml"
        deep.write_text(text + "\n")
        with pytest.raises(ConfigError, match="deep.toml: nested deeper") as err:
            load_spec(deep)
        assert "\n" not in str(err.value)
    shallow = tmp_path / "shallow.toml"  # 40 levels: parsed, then refused by the depth check
    shallow.write_text("x = " + "[" * 40 + "]" * 40 + "\n")
    with pytest.raises(ConfigError, match=r"shallow.toml: x(\[0\])+: nested deeper than 32"):
        load_spec(shallow)


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'prompts'"):
        parse_spec({"name": "t", "checkpoints": ["tiny-audio"]})


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_spec(tmp_path / "missing.toml")


def test_expand_is_the_full_grid_with_unique_stable_ids():
    spec = parse_spec({
        **BASE, "checkpoints": ["tiny-audio", "tiny-speech"], "schedulers": ["ddim", "euler", "unipc"],
        "steps": [10, 20], "guidance_scales": [1.0, 3.5], "audio_lengths_s": [1.0],
    })
    cells = expand(spec, "cpu")
    assert len(cells) == 2 * 3 * 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    again = expand(parse_spec(spec.model_dump()), "cpu")
    assert [c.id for c in again] == [c.id for c in cells]
    # cells sharing a pipeline are adjacent, so each pipeline loads once
    keys = [c.load_key for c in cells]
    assert keys == sorted(keys, key=keys.index)
    assert len({k for k in keys}) == 2


def test_ids_change_with_outputs_not_with_seeds_or_prompts():
    base = expand(parse_spec(BASE), "cpu")[0]
    changed = [
        expand(parse_spec({**BASE, "steps": [199]}), "cpu")[0],
        expand(parse_spec({**BASE, "negative_prompts": ["low quality"]}), "cpu")[0],
        expand(parse_spec({**BASE, "schedulers": [{"name": "ddim", "options": {"timestep_spacing": "trailing"}}]}), "cpu")[0],
        expand(parse_spec(BASE), "cuda")[0],
        base.model_copy(update={"versions": {**base.versions, "diffusers": "0.0.1"}}),
    ]
    assert len({base.id, *(c.id for c in changed)}) == 1 + len(changed)
    more_seeds = expand(parse_spec({**BASE, "seeds": [0, 1, 2], "prompts": {"set": "smoke", "limit": 3}}), "cpu")[0]
    assert more_seeds.id == base.id


def test_checkpoint_tables_and_revision():
    spec = parse_spec({**BASE, "checkpoints": [{"id": "cvssp/audioldm2", "revision": "abc123"}, "tiny-audio"]})
    assert [(c.id, c.revision) for c in spec.checkpoints] == [("cvssp/audioldm2", "abc123"), ("tiny-audio", None)]


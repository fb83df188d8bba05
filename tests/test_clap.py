"""``clap`` computes what laion_clap 1.1.7 computes; ``clap-window`` keeps the earlier window-average rule.

The independent references here are transformers' stock ``ClapFeatureExtractor`` (which
re-implements laion's ``get_audio_features``, fusion branch included, without antialiasing)
and hand-computed cases; ``benchmarks/clap_crosscheck.py`` compares against laion_clap itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.score.embed import EmbedderError, get_embedder
from harness.score.embed.clap import TEXT_MAX_TOKENS, fusion_chunk_starts, int16_round_trip, repeat_pad

RATE = 48000


@pytest.fixture(scope="module")
def fused():
    return get_embedder("tiny-clap", fusion=True, resize_antialias=False)


def _clip(seconds: float, seed: int = 0, peak: float = 0.3) -> np.ndarray:
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(n) + peak * np.sin(2 * np.pi * (300 + 200 * t) * t)).astype(np.float32)


def _hand_quantised(x: np.ndarray) -> np.ndarray:
    # laion scales float32 audio in float32: the product's rounding decides some int16 values.
    scaled = np.clip(x.astype(np.float32), -1, 1) * np.float32(32767)
    return (np.trunc(scaled).astype(np.float64) / 32767).astype(np.float32)


def test_int16_round_trip_clips_and_truncates_like_laion():
    x = np.array([1.5, -2.0, 0.5, -0.5, 1e-5, -1e-5, 0.999999], dtype=np.float32)
    expected = np.array([1.0, -1.0, 16383 / 32767, -16383 / 32767, 0.0, 0.0, 32766 / 32767], dtype=np.float32)
    np.testing.assert_array_equal(int16_round_trip(x), expected)


def test_repeat_pad_tiles_whole_copies_then_zero_pads():
    np.testing.assert_array_equal(repeat_pad(np.array([1.0, 2.0, 3.0]), 8), [1, 2, 3, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(repeat_pad(np.array([4.0, 5.0]), 2), [4, 5])


def test_short_clip_input_is_the_stock_feature_extractor_on_the_quantised_clip(fused):
    clip = _clip(3.3, peak=1.4)  # over full scale: the round trip clips it
    features, longer = fused.audio_input(clip)
    stock = fused.feature_extractor([_hand_quantised(clip).astype(np.float64)], sampling_rate=RATE,
                                    truncation="fusion", padding="repeatpad")
    assert features.shape == (4, 1001, 64) and not longer
    np.testing.assert_allclose(features, stock["input_features"][0], atol=1e-4)
    # Clipping happens before quantising: pushing the over-range peaks further changes nothing.
    louder = np.where(np.abs(clip) > 1, 3 * clip, clip)
    assert (np.abs(clip) > 1).any()
    np.testing.assert_array_equal(fused.embed_audio([louder])[0], fused.embed_audio([clip])[0])


def test_long_clip_takes_the_fusion_branch_with_laions_chunk_choice(fused):
    clip = _clip(20.0, seed=1)
    features, longer = fused.audio_input(clip)
    np.random.seed(fused.fusion_seed)  # laion and transformers draw from numpy's global RNG
    stock = fused.feature_extractor([_hand_quantised(clip).astype(np.float64)], sampling_rate=RATE,
                                    truncation="fusion", padding="repeatpad")
    assert longer and bool(stock["is_longer"][0][0])
    np.testing.assert_allclose(features, stock["input_features"][0], atol=1e-4)
    # The starts come from the thirds of the 2001 - 1001 + 1 possible ones.
    front, middle, back = fusion_chunk_starts(2001, 1001, fused.fusion_seed)
    assert 0 <= front <= 333 < middle <= 667 < back <= 1000


def test_fusion_is_deterministic_and_its_seed_is_part_of_the_identity(fused):
    clips = [_clip(12.0, seed=2), _clip(0.8, seed=3)]
    np.random.seed(5)
    first = fused.embed_audio(clips)
    state = np.random.get_state()
    np.random.seed(6)
    again = fused.embed_audio(clips)
    alone = fused.embed_audio(clips[:1])
    np.random.set_state(state)
    fused.embed_audio(clips)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global RNG is never touched
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    np.testing.assert_allclose(alone[0], first[0], atol=1e-6)  # batch neighbours: round-off only
    other = get_embedder("tiny-clap", fusion=True, resize_antialias=False, fusion_seed=fused.fusion_seed + 1)
    assert not np.allclose(other.embed_audio(clips[:1])[0], first[0], atol=1e-4)
    assert other.identity_key != fused.identity_key
    assert other.identity()["preprocessing"]["fusion_seed"] == fused.fusion_seed + 1


def test_just_over_ten_seconds_is_kept_whole_as_laion_does(fused):
    clip = _clip(10.0)
    over = np.concatenate([clip, clip[:100]])  # longer by less than one 480-sample hop
    features, longer = fused.audio_input(over)
    assert not longer and features.shape == (4, 1001, 64)
    assert all(np.array_equal(features[0], features[i]) for i in (1, 2, 3))
    np.testing.assert_allclose(features[0], fused.log_mel(_hand_quantised(over)), atol=1e-5)


def test_unfused_model_crops_long_clips_at_a_seeded_offset():
    unfused = get_embedder("tiny-clap")
    clip = _clip(13.0, seed=4)
    features, longer = unfused.audio_input(clip)
    start = np.random.RandomState(unfused.fusion_seed).randint(0, clip.size - 480000 + 1)
    stock = unfused.feature_extractor([_hand_quantised(clip)[start:start + 480000].astype(np.float64)],
                                      sampling_rate=RATE, truncation="rand_trunc")
    assert features.shape == (1, 1001, 64) and not longer
    np.testing.assert_allclose(features, stock["input_features"][0], atol=1e-4)


def _words(tokenizer, n: int) -> list[str]:
    """n words that are one token each in the tiny tokenizer (with a leading space)."""
    ones = [w for w in ("dog", "rain", "car", "door", "bird", "train", "water", "wind")
            if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    return [ones[i % len(ones)] for i in range(n)]


def test_text_is_truncated_at_77_tokens(fused):
    assert TEXT_MAX_TOKENS == 77
    words = _words(fused.tokenizer, 100)
    content = TEXT_MAX_TOKENS - 2  # <s> ... </s>
    prefix = " " + " ".join(words[:content])
    assert len(fused.tokenizer(prefix)["input_ids"]) == TEXT_MAX_TOKENS
    same = fused.embed_text([prefix, prefix + " water wind dog", " " + " ".join(words[:content - 1]) + " bird"])
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # what follows token 77 is cut off
    assert not np.allclose(same[0], same[2], atol=1e-4)  # token 76 still counts
    # Padding to 77 does not change a short caption (laion pads every caption to 77).
    alone = fused.embed_text(["a dog barks"])
    np.testing.assert_allclose(fused.embed_text(["a dog barks", prefix])[0], alone[0], atol=1e-6)


def test_a_text_model_without_room_for_77_tokens_is_refused(tmp_path):
    window = get_embedder("tiny-clap-window")  # the tiny pipeline's CLAP: 66 positions
    for part in (window.model, window.tokenizer, window.feature_extractor):
        part.save_pretrained(tmp_path)
    with pytest.raises(EmbedderError, match="66 positions.*77 tokens need 79"):
        get_embedder("clap", model=str(tmp_path))


def test_window_mode_reproduces_the_stock_window_average_computation():
    import torch

    window = get_embedder("tiny-clap-window")
    clip = _clip(10.24, seed=5)
    rows = window.embed_audio([clip])[0]
    pieces = [clip[:480000], clip[11520:]]  # [0, 10] s and [0.24, 10.24] s
    stock = window.feature_extractor([p.astype(np.float64) for p in pieces], sampling_rate=RATE,
                                     truncation="rand_trunc", padding="repeatpad", return_tensors="pt")
    with torch.no_grad():
        ref = window.model.get_audio_features(input_features=stock["input_features"].float()).pooler_output
    np.testing.assert_allclose(rows, ref.numpy(), atol=1e-5)
    tokens = window.tokenizer(["a dog barks", "rain"], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        text = window.model.get_text_features(**tokens).pooler_output
    np.testing.assert_allclose(window.embed_text(["a dog barks", "rain"]), text.numpy(), atol=1e-5)
    laion = get_embedder("tiny-clap")
    assert window.identity()["preprocessing"]["mode"] == "window-average"
    assert laion.identity()["preprocessing"]["mode"] == "laion_clap 1.1.7"
    assert window.identity_key != laion.identity_key


def test_identity_records_every_setting_of_the_laion_mode(fused):
    pre = fused.identity()["preprocessing"]
    assert pre["text"]["max_tokens"] == 77 and pre["fusion_seed"] == 0 and pre["resize_antialias"] is False
    assert "int16" in pre["int16_round_trip"] and pre["mel_filters"] == "htk, no norm"
    assert get_embedder("tiny-clap", fusion=True).identity_key != fused.identity_key  # antialias on


def test_gate_refuses_to_compare_clap_scores_of_different_modes(fused):
    from harness.gate.compare import judge
    from harness.gate.policy import Rule
    from harness.gate.summary import Figure

    keys = [f"p{i}|0" for i in range(8)]
    scores = list(np.linspace(0.2, 0.3, 8))
    rule = Rule(figure="clap_score:*", max_regression=0.02)
    other_mode = get_embedder("tiny-clap-window", fusion=True).identity_key
    for cand_id, status in ((fused.identity_key, "pass"), (other_mode, "incomparable")):
        base = Figure(0.25, "higher", samples=scores, keys=keys, reference_id="r", embedder_id=fused.identity_key)
        cand = Figure(0.25, "higher", samples=scores, keys=keys, reference_id="r", embedder_id=cand_id)
        verdict = judge("c", "l", "clap_score:tiny-clap", base, cand, rule, 0.05)
        assert verdict.status == status, verdict

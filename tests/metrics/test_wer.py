"""WER and CER: a hand-counted case, jiwer's own corpus computation, the Whisper normaliser, edge cases."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from harness.score.metrics.wer import WordErrorRate, normalise, sample_errors


def test_hand_counted_case():
    # reference "the cat sat on the mat" (6 words), hypothesis "cat sit on the mat now":
    # the (D), cat=cat, sat->sit (S), on=on, the=the, mat=mat, now (I): S1 D1 I1 H4
    e = sample_errors("The cat sat on the mat.", "Cat sit on the mat, now!")
    assert (e.substitutions, e.deletions, e.insertions, e.hits) == (1, 1, 1, 4)
    assert e.reference_words == 6 and e.wer == pytest.approx(3 / 6)
    # characters of "the cat sat on the mat" (22): "the " deleted (4), a->i (1), " now" inserted (4)
    assert e.reference_chars == 22 and e.char_edits == 9 and e.cer == pytest.approx(9 / 22)


def test_normalisation_happens_before_counting():
    e = sample_errors("Mr. Smith paid $5 at 10, didn't he?", "mister smith paid five dollars at ten did not he")
    assert e.reference == e.hypothesis and e.wer == 0.0 and e.cer == 0.0
    assert normalise("The colour of the harbour") == "the color of the harbor"


REFS = ["the quick brown fox jumps over the lazy dog", "hello world", "a b c d e f", "speech synthesis is hard",
        "one more sentence here"]
HYPS = ["the quick brown fox jumped over a lazy dog", "hello", "a x c d e f g h", "speech synthesis is hard",
        "won more sentences hear now"]


def test_corpus_wer_and_cer_equal_jiwer():
    metric = WordErrorRate(n_resamples=200)
    metric.update([f"p{i}" for i in range(len(REFS))], REFS, HYPS)
    ours_w, ours_c = metric.compute("wer"), metric.compute("cer")
    assert ours_w.value == pytest.approx(jiwer.wer(REFS, HYPS), abs=1e-15)
    assert ours_c.value == pytest.approx(jiwer.cer(REFS, HYPS), abs=1e-15)
    words = jiwer.process_words(REFS, HYPS)
    assert ours_w.edits == words.substitutions + words.deletions + words.insertions
    assert ours_w.reference_units == sum(len(r) for r in words.references)
    # corpus-level, not the mean of per-sample rates (which differs here)
    assert ours_w.value != pytest.approx(np.mean([s.wer for s in metric.samples()]))
    assert ours_w.low <= ours_w.value <= ours_w.high and ours_w.low < ours_w.high


def test_ci_resamples_prompts_not_samples():
    # Two seeds of one prompt move together: a prompt's rows are summed before resampling.
    metric = WordErrorRate(n_resamples=100)
    metric.update(["a", "a", "b"], ["x y", "x y", "x y z w"], ["x y", "x q", "x"])
    per_prompt = metric._per_prompt("wer")
    assert per_prompt.tolist() == [[1, 4], [3, 4]]
    assert metric.compute("wer").n_prompts == 2 and metric.compute("wer").n == 3


def test_empty_hypothesis_is_all_deletions():
    e = sample_errors("hello there world", "")
    assert e.flags == ("empty_hypothesis",) and e.deletions == 3 and e.wer == 1.0 and e.cer == 1.0


def test_empty_reference_is_flagged_and_its_insertions_count():
    assert sample_errors("(laughs)", "").wer == 0.0
    e = sample_errors("♪ ♪", "surprise words")
    assert e.flags == ("empty_reference",) and e.insertions == 2 and e.wer == 1.0
    metric = WordErrorRate(n_resamples=100)
    metric.update(["a", "b", "c"], ["?!", "good night", "see you"], ["surprise words", "good night", "see"])
    result = metric.compute("wer")
    assert result.value == pytest.approx((2 + 1) / 4) and result.flag_counts["empty_reference"] == 1


def test_no_reference_words_at_all_is_undefined_not_a_crash():
    metric = WordErrorRate()
    metric.update(["a", "b"], ["!", "?"], ["", "hm"])
    result = metric.compute("wer")
    assert result.value is None and "undefined" in result.method and result.n == 2


def test_non_speech_flag_is_kept_and_scored():
    metric = WordErrorRate()
    metric.update(["a", "b"], ["hello world", "good night"], ["", "good night"], [["non_speech"], []])
    samples = metric.samples()
    assert samples[0].flags == ("empty_hypothesis", "non_speech") and samples[1].flags == ()
    result = metric.compute("wer")
    assert result.value == pytest.approx(2 / 4) and result.flag_counts["non_speech"] == 1


def test_details_are_json_ready():
    import json

    row = sample_errors("Hi there", "hi").details()
    assert json.loads(json.dumps(row, allow_nan=False))["deletions"] == 1
    assert row["wer"] == 0.5 and row["reference"] == "hi there"

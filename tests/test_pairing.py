"""Pairing reference files with prompts: by stem, by AudioCaps ids, by a CSV manifest; nothing
unmatched is dropped silently."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from harness.data.pairing import pair_reference
from harness.data.references import ReferenceSetError, ingest_reference_folder


def _folder(tmp_path, names):
    root = tmp_path / "ref"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(root / name, 16000, (0.3 * rng.standard_normal(16000)).astype(np.float32))
    return ingest_reference_folder(root)


def test_stem_pairs_ids_and_set_keys_and_lists_the_rest(tmp_path):
    ref = _folder(tmp_path, ["p1.wav", "abcXYZ.flac.wav", "Yyt2.wav", "mc9.wav", "stray.wav", "sub/p2.wav"])
    ids = ["p1", "p2", "audiocaps-yt2", "musiccaps-mc9", "p_missing"]
    pairing = pair_reference(ref, ids, "stem")
    got = {p: ref.entries[i].path for p, i in pairing.matched.items()}
    assert got == {"p1": "p1.wav", "p2": "sub/p2.wav", "audiocaps-yt2": "Yyt2.wav", "musiccaps-mc9": "mc9.wav"}
    assert pairing.unmatched_prompts == ["p_missing"]
    assert pairing.unmatched_files == ["abcXYZ.flac.wav", "stray.wav"]
    report = pairing.to_json(ref)
    assert report["n_unmatched_files"] == 2 and report["n_unmatched_prompts"] == 1
    # The identity follows the pairs: same files, another pairing -> another identity.
    other = pair_reference(ref, ["p1"], "stem")
    assert other.identity(ref) != pairing.identity(ref)


def test_audiocaps_ids_and_manifest(tmp_path):
    ref = _folder(tmp_path, ["97151.wav", "ytB.wav", "x.wav"])
    csv = tmp_path / "test.csv"
    csv.write_text("audiocap_id,youtube_id,start_time,caption\n97151,ytA,30,a dog barks\n97152,ytA,30,dog\n"
                   "5,ytB,0,rain\n")
    pairing = pair_reference(ref, ["audiocaps-ytA", "audiocaps-ytB"], f"audiocaps:{csv}")
    assert {p: ref.entries[i].path for p, i in pairing.matched.items()} == {"audiocaps-ytA": "97151.wav",
                                                                             "audiocaps-ytB": "ytB.wav"}
    assert pairing.unmatched_files == ["x.wav"]

    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"prompt_id,path\nq1,x.wav\nq2,{ref.root / 'ytB.wav'}\nq3,gone.wav\n")
    by_manifest = pair_reference(ref, ["q1", "q2", "q3"], f"manifest:{manifest}")
    assert {p: ref.entries[i].path for p, i in by_manifest.matched.items()} == {"q1": "x.wav", "q2": "ytB.wav"}
    assert by_manifest.unmatched_prompts == ["q3"] and "gone.wav" in by_manifest.notes[0]


def test_bad_pairings_are_one_line_errors(tmp_path):
    ref = _folder(tmp_path, ["ytA.wav", "Yyt A.wav", "YytA.wav"])
    with pytest.raises(ReferenceSetError, match="matches two reference files, YytA.wav and ytA.wav"):
        pair_reference(ref, ["audiocaps-ytA"], "stem")
    with pytest.raises(ReferenceSetError, match="unknown pairing rule 'name'; valid: stem, audiocaps:CSV"):
        pair_reference(ref, ["a"], "name")
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,file\n")
    with pytest.raises(ReferenceSetError, match="lacks column"):
        pair_reference(ref, ["a"], f"manifest:{bad}")

"""Cross-check the harness's VGGish and PANN FAD against frechet-audio-distance 0.3.4 on the same folders.

Uses the folders, run and shared random weights of ``audioldm_eval_crosscheck.py`` (run its
``prepare`` and ``reference`` steps first), in the same throwaway venv:

    /tmp/fadref/bin/python benchmarks/fad_crosscheck.py reference /tmp/aexcheck   # frechet-audio-distance
    python benchmarks/fad_crosscheck.py compare /tmp/aexcheck                     # the harness, then both

frechet-audio-distance reads the generated clips as float32 (``gen_float/``: the run's own
samples), so the harness scores with its default front ends (no 16-bit round trip) and VGGish
frames pooled. Its ``__init__`` imports laion_clap and encodec (stubbed: not used for these
models) and its VGGish comes from ``torch.hub.load`` (the local torchvggish hub class, as in
the audioldm_eval cross-check).

Finding: in 0.3.4 the PANN path appends each clip's (2048,) embedding and concatenates them
along axis 0, so its "FAD" is the Fréchet distance of two *univariate* Gaussians fitted to all
embedding values pooled; with current scipy its ``sqrtm`` unpacking then fails on the 1x1
matrix and ``score`` returns -1. The harness does not copy that: ``reference`` also applies
frechet-audio-distance's own statistics and Fréchet formula to its PANN embeddings kept as
(clips, 2048) rows, and ``compare`` sets the harness's ``fad`` on ``pann`` beside that.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def reference(out: Path) -> None:
    """frechet-audio-distance 0.3.4's VGGish and PANN FAD of gen_float/ against ref/."""
    import torch

    from audioldm_eval_crosscheck import hub_vggish

    state = torch.load(out / "vggish.pth", weights_only=True)
    torch.hub.load = lambda *args, **kwargs: hub_vggish(state)
    sys.modules["laion_clap"] = types.ModuleType("laion_clap")
    encodec = types.ModuleType("encodec")
    encodec.EncodecModel = object
    sys.modules["encodec"] = encodec
    from frechet_audio_distance import FrechetAudioDistance

    result = {}
    for model in ("vggish", "pann"):
        fad = FrechetAudioDistance(ckpt_dir=str(out / "ckpt"), model_name=model, sample_rate=16000,
                                   use_pca=False, use_activation=False, verbose=False)
        result[model] = float(fad.score(str(out / "gen_float"), str(out / "ref")))
    # Its PANN score on its own embeddings kept 2048-d (rows = clips): what the PANN path means to compute.
    load = fad._FrechetAudioDistance__load_audio_files
    emb = [fad.get_embeddings(load(str(out / d)), sr=16000).reshape(-1, 2048) for d in ("gen_float", "ref")]
    stats = [fad.calculate_embd_statistics(e) for e in emb]
    result["pann_2048"] = float(fad.calculate_frechet_distance(*stats[0], *stats[1]))
    (out / "frechet_audio_distance.json").write_text(json.dumps(result, indent=1))
    print(f"frechet-audio-distance 0.3.4: {result}")


def compare(out: Path) -> None:
    """The harness's FAD on the same run and folder with the same weights, beside the reference."""
    from harness.score.embed.audio import Clip
    from harness.score.embed.pann import PannEmbedder
    from harness.score.metrics import fad_from_embeddings, frechet_distance
    from harness.score.scoring import score_run

    theirs = json.loads((out / "frechet_audio_distance.json").read_text())
    pann_file = out / "ckpt" / "Cnn14_16k_mAP=0.438.pth"
    result = score_run(out / "run", str(out / "ref"), "pann,vggish", metrics="fad", bootstrap=0,
                       weights={"pann": str(pann_file), "vggish": str(out / "vggish.pth")}, cache_dir=out / "cache")
    rows = {r["embedder"]: r["value"] for r in result.rows}
    print("| figure | harness | frechet-audio-distance 0.3.4 | relative difference |\n|---|---|---|---|")
    print(f"| VGGish FAD (frames pooled) | {rows['vggish']:.9g} | {theirs['vggish']:.9g} | "
          f"{abs(rows['vggish'] - theirs['vggish']) / abs(theirs['vggish']):.2g} |")
    pann = PannEmbedder(weights=str(pann_file))
    emb = {d: np.concatenate(pann.embed_audio([Clip.from_file(p).samples for p in sorted((out / d).iterdir())]))
           for d in ("gen_float", "ref")}
    flat = {d: e.reshape(-1) for d, e in emb.items()}
    one_d = frechet_distance(np.atleast_1d(flat["gen_float"].mean()), np.atleast_2d(np.var(flat["gen_float"], ddof=1)),
                             np.atleast_1d(flat["ref"].mean()), np.atleast_2d(np.var(flat["ref"], ddof=1))).value
    print(f"| PANN FAD, 2048-d (its embeddings and formula, rows = clips) | {rows['pann']:.9g} | "
          f"{theirs['pann_2048']:.9g} | {abs(rows['pann'] - theirs['pann_2048']) / abs(theirs['pann_2048']):.2g} |")
    print(f"| PANN FAD as its `score` computes it (all values pooled, 1-d) | {one_d:.9g} | {theirs['pann']:.9g} "
          "(-1: its sqrtm unpacking fails on the 1x1 covariance) | - |")
    assert abs(fad_from_embeddings(emb["gen_float"], emb["ref"]).value - rows["pann"]) <= 1e-9 * abs(rows["pann"])


if __name__ == "__main__":
    {"reference": reference, "compare": compare}[sys.argv[1]](Path(sys.argv[2]).resolve())

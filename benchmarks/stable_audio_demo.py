"""The stable-audio-metrics figures of a tiny run against a paired synthetic reference, with CIs.

``score --protocol stable-audio-metrics`` computes these figures on any run; this script shows them
end to end with the tiny embedders and adds the seconds per clip each model takes (random
weights: the numbers only show that the pipeline runs and what it costs, not quality):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/stable_audio_demo.py /tmp/sam-demo

It generates a tiny run (tiny-audio, DDIM 5 steps, 2 s, 4 prompts x 2 seeds), writes one
synthetic reference clip per prompt (16 kHz, a tone plus noise), embeds both with
``tiny-openl3`` (channels 2), ``tiny-passt`` and ``tiny-clap`` (``peak_dbfs=-1``), and prints
FD_openl3 (percentile bootstrap over prompts, reference fixed), KL_passt and CLAP (BCa bootstrap
of the per-sample mean), each with the seconds per clip each model took on CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    """Run, reference, embeddings, figures."""
    import soundfile as sf

    from harness.generate.run import run_sweep
    from harness.score.embed.audio import Clip
    from harness.score.embed.registry import get_embedder
    from harness.score.metrics.bootstrap import bootstrap_ci, set_metric_ci
    from harness.score.metrics.clap_score import clap_scores
    from harness.score.metrics.stable_audio import fd_openl3, kl_passt_divergences
    from harness.store import read_store

    out.mkdir(parents=True, exist_ok=True)
    sweep = out / "sweep.toml"
    sweep.write_text('name = "sam-demo"\ncheckpoints = ["tiny-audio"]\nschedulers = ["ddim"]\nsteps = [5]\n'
                     'audio_lengths_s = [2.0]\nseeds = [0, 1]\ndevice = "cpu"\nbatch_size = 4\n'
                     '[prompts]\nset = "smoke"\nlimit = 4\n')
    result = run_sweep(sweep, out / "run", progress=False)
    with read_store(result.run_dir) as store:
        rows = [r for r in store.samples() if r["status"] == "ok"]
    prompts = sorted({r["prompt_id"] for r in rows})
    rng = np.random.default_rng(0)
    reference = {}
    for i, pid in enumerate(prompts):  # the paired reference: one clip per prompt
        t = np.arange(2 * 16000) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (250 + 120 * i) * t) + rng.normal(0, 0.05, t.size)
        sf.write(out / f"ref-{i}.wav", audio.astype(np.float32), 16000, subtype="PCM_16")
        reference[pid] = Clip.from_file(out / f"ref-{i}.wav")
    generated = [Clip.from_file(result.run_dir / r["audio_path"]) for r in rows]

    def embed(embedder, clips):
        """(embedding, extra outputs) per clip, and seconds per clip (input preparation included)."""
        start, outs = time.perf_counter(), []
        for clip in clips:
            samples = embedder.audio_of(clip)
            both = getattr(embedder, "embed_audio_outputs", None)  # on every embedder once issue 10 lands
            emb, extras = both([samples]) if both else ([embedder.embed_audio([samples])[0]], {})
            outs.append((emb[0], {k: v[0] for k, v in extras.items()}))
        return outs, (time.perf_counter() - start) / len(clips)

    print(f"tiny run: {len(rows)} clips ({len(prompts)} prompts x 2 seeds), 2 s each; reference {len(prompts)} clips")
    openl3 = get_embedder("tiny-openl3")
    gen_o, t_o = embed(openl3, generated)
    ref_o, _ = embed(openl3, list(reference.values()))
    x = [o[0] for o in gen_o]
    y = [o[0] for o in ref_o]
    by_prompt = np.array([prompts.index(r["prompt_id"]) for r in rows])

    def fd_of(idx, _ref):  # resample prompts (each with its seeds), reference fixed
        return float(fd_openl3([x[i] for p in idx for i in np.flatnonzero(by_prompt == p)], y))

    fd = set_metric_ci(np.arange(len(prompts)), np.zeros(1), fd_of, n_resamples=200)
    print(f"| FD_openl3 (tiny-openl3) | {fd.value:.4g} [{fd.low:.4g}, {fd.high:.4g}] | {t_o:.2f} s per clip |")

    passt = get_embedder("tiny-passt")
    gen_p, t_p = embed(passt, generated)
    ref_p = {pid: embed(passt, [c])[0][0][1]["logits"] for pid, c in reference.items()}
    kl = kl_passt_divergences([g[1]["logits"] for g in gen_p], [ref_p[r["prompt_id"]] for r in rows])
    kl_ci = bootstrap_ci(kl)
    print(f"| KL_passt (tiny-passt) | {kl_ci.value:.4g} [{kl_ci.low:.4g}, {kl_ci.high:.4g}] | {t_p:.2f} s per clip |")

    clap = get_embedder("tiny-clap", peak_dbfs=-1.0)
    start = time.perf_counter()
    audio = np.concatenate([clap.embed_audio([clap.audio_of(c)])[0] for c in generated])
    t_c = (time.perf_counter() - start) / len(generated)
    scores = clap_scores(clap.embed_text([r["prompt"] for r in rows]), audio)
    c_ci = bootstrap_ci(scores)
    print(f"| CLAP (tiny-clap, peak -1 dBFS) | {c_ci.value:.4g} [{c_ci.low:.4g}, {c_ci.high:.4g}] | {t_c:.2f} s per clip |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stable_audio_demo.py OUT_DIR")
    main(Path(sys.argv[1]))

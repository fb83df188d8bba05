"""Cross-check the harness's ``clap`` embedder against laion_clap 1.1.7 itself.

laion_clap pins numpy<2, imports torchvision and torchaudio (whose compiled parts do not load
beside this project's CPU torch) and builds roberta-base from the hub, so it runs in a throwaway
venv, with torchvision's and torchaudio's pure-Python modules side-loaded (their package
``__init__`` and compiled extensions skipped; ``Resize`` and ``MelSpectrogram`` are pure torch)
and a local RoBERTa (2 layers, width 768 as laion's text projection needs, a BPE tokenizer
trained here) in place of roberta-base:

    # 1. a throwaway venv with the reference code
    python3 -m venv /tmp/clapref
    /tmp/clapref/bin/pip install torch==2.13.0 numpy scipy soundfile librosa ftfy braceexpand wget h5py \\
        tqdm regex pandas scikit-learn pillow 'transformers<5'
    /tmp/clapref/bin/pip install --no-deps torchlibrosa webdataset laion_clap==1.1.7 torchvision torchaudio
    /tmp/clapref/bin/python benchmarks/clap_crosscheck.py reference /tmp/clapx

    # 2. the harness's environment: convert the same weights into transformers' ClapModel, embed the same inputs
    python benchmarks/clap_crosscheck.py compare /tmp/clapx

Step 1 builds ``CLAP_Module(enable_fusion=True)`` (HTSAT-tiny, fusion ``aff_2d``; and an
unfused one, ``enable_fusion=False``, with other random weights) with random
weights (batch-norm statistics and layer norms randomised too, so they matter), saves its state
dict, the tokenizer, the clips and laion's embeddings: audio of 1 s, 5 s (peaks at 1.6, so the
int16 round trip clips), 5 s with nothing above 7.8 kHz (as 16 kHz AudioLDM 2 output), 9.9 s, 10 s + 100 samples (longer by less than a hop), 10.24 s and
20 s, each from ``get_audio_embedding_from_data`` after ``np.random.seed(SEED)`` (which makes
laion's chunk choice the one the harness draws from ``RandomState(SEED)``), with torchvision's
default ``Resize`` (antialiased) and with ``antialias=False``; text of a short caption and a
caption of over 100 tokens (``get_text_embedding``). Step 2 converts the state dict into a
transformers ``ClapModel`` folder (strict: every weight the ClapModel has comes from the file),
embeds the same inputs with ``get_embedder("clap", model=FOLDER, fusion_seed=SEED, ...)`` and
prints the cosine of every pair, then the cosines when a setting is deliberately wrong (to show
what the check can see).

With the published weights (a machine with network, roberta-base in the Hugging Face cache),
the same two steps check that ``laion/clap-htsat-fused`` computes what laion_clap's
``630k-audioset-fusion-best.pt`` computes:

    /tmp/clapref/bin/python benchmarks/clap_crosscheck.py reference /tmp/clapx-real 630k-audioset-fusion-best.pt
    python benchmarks/clap_crosscheck.py compare /tmp/clapx-real laion/clap-htsat-fused
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import site
import sys
import types
from pathlib import Path

import numpy as np

SEED = 0
RATE = 48000
LENGTHS = {"1 s": RATE, "5 s (peaks 1.6)": 5 * RATE, "5 s (16 kHz origin)": 5 * RATE, "9.9 s": int(9.9 * RATE),
           "10 s + 100 samples": 10 * RATE + 100, "10.24 s": int(10.24 * RATE), "20 s": 20 * RATE}
TEXT_CONFIG = {"vocab_size": 1000, "hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 12,
               "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1,
               "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5, "hidden_act": "gelu"}
CORPUS = ["a dog barks in the distance while rain falls on a tin roof",
          "a man speaks over the sound of a passing train and birds chirp",
          "water runs from a tap, a door closes and footsteps fade away",
          "an engine idles, then a car horn honks twice and people talk"] * 20
TEXTS = ["a dog barks", " ".join(f"{w} {i}" for i, w in enumerate(" ".join(CORPUS[:3]).split()[:28]))]


def _clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, n in LENGTHS.items():
        t = np.arange(n) / RATE
        clip = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
        if "16 kHz" in name:  # nothing above 8 kHz: only the int16 round trip fills those mel bins
            spectrum = np.fft.rfft(clip)
            spectrum[np.fft.rfftfreq(n, 1 / RATE) > 7800] = 0
            clip = 0.3 * np.fft.irfft(spectrum, n)
        out[name] = (clip * (4.0 if "peaks" in name else 1.0)).astype(np.float32)
    return out


def _side_load() -> None:
    """Import torchvision's and torchaudio's Python modules without their compiled extensions."""
    root = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    for name in ("torchvision", "torchaudio"):
        spec = importlib.util.spec_from_file_location(name, f"{root}/{name}/__init__.py",
                                                      submodule_search_locations=[f"{root}/{name}"])
        sys.modules[name] = importlib.util.module_from_spec(spec)
    ext = types.ModuleType("torchaudio._extension")
    ext._IS_TORCHAUDIO_EXT_AVAILABLE = ext._IS_ALIGN_AVAILABLE = False
    ext.fail_if_no_align = lambda f: f
    sys.modules["torchaudio._extension"] = ext
    importlib.import_module("torchaudio.transforms")  # laion uses them as attributes of the packages
    importlib.import_module("torchvision.transforms")


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TEXT_CONFIG["vocab_size"], special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = RobertaTokenizerFast(tokenizer_object=tok, model_max_length=512)
    fast.save_pretrained(folder)
    return RobertaTokenizerFast.from_pretrained(folder)


def _randomise_norms(model) -> None:
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def reference(out: Path, ckpt: str | None = None) -> None:
    """laion_clap's embeddings of the clips and texts (run in the throwaway venv).

    Without ``ckpt``: random weights (saved for step 2) and a local RoBERTa; with ``ckpt`` (e.g.
    ``630k-audioset-fusion-best.pt``): those weights, and roberta-base from the Hugging Face cache.
    """
    _side_load()
    import torch
    import torchvision.transforms
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    # laion's module-level tokenizers (training/data.py) are never used here: do not fetch them.
    for cls in (transformers.BertTokenizer, transformers.BartTokenizer):
        cls.from_pretrained = classmethod(lambda cls, *a, **k: None)
    if ckpt is None:  # no hub: laion's roberta-base becomes the local one
        tokenizer = _tokenizer(out / "tokenizer")
        transformers.RobertaTokenizer.from_pretrained = classmethod(lambda cls, *a, **k: tokenizer)
        transformers.RobertaModel.from_pretrained = classmethod(
            lambda cls, *a, **k: transformers.RobertaModel(transformers.RobertaConfig(**TEXT_CONFIG)))
    from laion_clap import CLAP_Module

    torch.manual_seed(0)
    module = CLAP_Module(enable_fusion=True, device="cpu")
    if ckpt is None:
        _randomise_norms(module.model)
        torch.save(module.model.state_dict(), out / "laion_clap_fused.pt")
    else:
        module.load_ckpt(ckpt, verbose=False)
    module.eval()
    clips = _clips()
    resize = torchvision.transforms.Resize
    audio = {}
    for antialias in (True, False):
        torchvision.transforms.Resize = resize if antialias else (lambda *a, **k: resize(*a, **k, antialias=False))
        for name, clip in clips.items():
            np.random.seed(SEED)  # laion draws its chunk starts from numpy's global RNG
            audio[f"{name}|{antialias}"] = module.get_audio_embedding_from_data([clip])[0]
    torchvision.transforms.Resize = resize
    text = module.get_text_embedding(TEXTS)
    tokens = [len(module.tokenize(t)["input_ids"]) for t in TEXTS]
    if ckpt is None:  # the unfused model too: its own mel filters, a seeded 10 s crop of longer clips
        torch.manual_seed(1)
        unfused = CLAP_Module(enable_fusion=False, device="cpu")
        _randomise_norms(unfused.model)
        torch.save(unfused.model.state_dict(), out / "laion_clap_unfused.pt")
        for name, clip in clips.items():
            np.random.seed(SEED)  # laion's rand_trunc crop offset
            audio[f"{name}|unfused"] = unfused.get_audio_embedding_from_data([clip])[0]
        audio["text|unfused"] = unfused.get_text_embedding(TEXTS)
    np.savez(out / "laion.npz", text=text, **{f"clip|{k}": v for k, v in clips.items()},
             **{f"audio|{k}": v for k, v in audio.items()})
    (out / "meta.json").write_text(json.dumps({"seed": SEED, "tokens": tokens, "texts": TEXTS, "ckpt": ckpt,
                                               "text_config": TEXT_CONFIG}))
    print(f"laion_clap reference written to {out} (weights: {ckpt or 'random'}; text tokens: {tokens})")


def laion_to_transformers(state: dict) -> dict:
    """Rename a laion_clap HTSAT/RoBERTa state dict to transformers' ClapModel names (qkv split)."""
    renames = [("text_branch.", "text_model."), ("audio_branch.", "audio_model.audio_encoder."),
               ("audio_encoder.bn0.", "audio_encoder.batch_norm."),
               (".attn.proj.", ".attention.output.dense."), (".attn.", ".attention.self."),
               (".mlp.fc1.", ".intermediate.dense."), (".mlp.fc2.", ".output.dense."),
               (".norm1.", ".layernorm_before."), (".norm2.", ".layernorm_after."),
               ("_projection.0.", "_projection.linear1."), ("_projection.2.", "_projection.linear2.")]
    dropped = ("audio_model.audio_encoder.spectrogram_extractor.", "audio_model.audio_encoder.logmel_extractor.",
               "audio_model.audio_encoder.tscam_conv.", "audio_model.audio_encoder.head.", "text_transform.",
               "audio_transform.")
    out = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        if key.startswith(dropped) or key.endswith("attn_mask"):
            continue  # heads and front ends the embeddings do not use; transformers computes the mel itself
        if ".qkv." in key:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[key.replace(".qkv.", f".{part}.")] = chunk
            continue
        out[key] = value
    return out


def _hf_folder(out: Path, meta: dict, fused: bool = True) -> Path:
    """A ClapModel folder (weights, tokenizer, feature extractor) holding laion's random weights."""
    import torch
    from transformers import AutoTokenizer, ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    text = ClapTextConfig(**meta["text_config"], projection_dim=512, projection_hidden_act="relu")
    audio = ClapAudioConfig(enable_fusion=fused, fusion_type="aff_2d" if fused else None, projection_dim=512)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=512))
    kind = "fused" if fused else "unfused"
    state = laion_to_transformers(torch.load(out / f"laion_clap_{kind}.pt", map_location="cpu", weights_only=True))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids", "relative_position_index"))]
    if missing or unexpected:
        raise SystemExit(f"conversion incomplete: missing {missing[:8]}, unexpected {unexpected[:8]}")
    folder = out / f"hf-{kind}"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(out / "tokenizer").save_pretrained(folder)
    ClapFeatureExtractor(feature_size=64, sampling_rate=RATE, hop_length=480, max_length_s=10, fft_window_size=1024,
                         frequency_min=50, frequency_max=14000, truncation="fusion" if fused else "rand_trunc",
                         padding="repeatpad").save_pretrained(folder)
    return folder


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare(out: Path, model: str | None = None) -> None:
    """Embed the reference inputs with the harness's ``clap`` and print the cosines against laion_clap.

    ``model``: a transformers CLAP (hub id or folder) to compare with step 1's ``ckpt``; without
    it, step 1's random weights converted into a ClapModel folder.
    """
    from harness.score.embed import get_embedder

    meta = json.loads((out / "meta.json").read_text())
    ref = np.load(out / "laion.npz")
    folder = model or _hf_folder(out, meta)
    names = [k.split("|", 1)[1] for k in ref.files if k.startswith("clip|")]
    rows, worst = [], 1.0
    for antialias in (True, False):
        embedder = get_embedder("clap", model=str(folder), fusion_seed=meta["seed"], resize_antialias=antialias)
        ours = embedder.embed_audio([ref[f"clip|{n}"] for n in names])
        for name, mine in zip(names, ours):
            cos = _cos(mine[0], ref[f"audio|{name}|{antialias}"])
            worst = min(worst, cos)
            rows.append(f"| audio {name} | antialias={antialias} | {cos:.9f} |")
    text = embedder.embed_text(meta["texts"])
    for i, n_tokens in enumerate(meta["tokens"]):
        cos = _cos(text[i], ref["text"][i])
        worst = min(worst, cos)
        rows.append(f"| text, {n_tokens} tokens | - | {cos:.9f} |")
    if model is None and (out / "laion_clap_unfused.pt").is_file():
        unfused = get_embedder("clap", model=str(_hf_folder(out, meta, fused=False)), fusion_seed=meta["seed"])
        for name, mine in zip(names, unfused.embed_audio([ref[f"clip|{n}"] for n in names])):
            cos = _cos(mine[0], ref[f"audio|{name}|unfused"])
            worst = min(worst, cos)
            rows.append(f"| unfused model: audio {name} | - | {cos:.9f} |")
        for i, (mine, theirs) in enumerate(zip(unfused.embed_text(meta["texts"]), ref["audio|text|unfused"])):
            cos = _cos(mine, theirs)
            worst = min(worst, cos)
            rows.append(f"| unfused model: text, {meta['tokens'][i]} tokens | - | {cos:.9f} |")
    print("| input | global-mel resize | cosine (harness clap vs laion_clap 1.1.7) |\n|---|---|---|")
    print("\n".join(rows))
    print(f"lowest cosine {worst:.9f} (target >= 0.99999)\n")
    _sensitivity(folder, ref, names, meta["seed"])


def _sensitivity(folder: Path, ref, names: list[str], seed: int) -> None:
    """How far the check can see: cosines against laion_clap when a setting is deliberately wrong."""
    from harness.score.embed import get_embedder
    from harness.score.embed.clap import repeat_pad

    laion = {n: ref[f"audio|{n}|True"] for n in names}
    spread = min(_cos(laion[a], laion[b]) for a in names for b in names if a != b)
    print("| deliberately different | input | cosine vs laion_clap |\n|---|---|---|")
    print(f"| another clip (laion vs laion, lowest pair) | all | {spread:.6f} |")
    long_clips = [n for n in names if n in ("10.24 s", "20 s")]
    for label, options in ((f"fusion_seed={seed + 1}", {"fusion_seed": seed + 1}),
                           ("resize_antialias=False vs laion's antialiased Resize", {"resize_antialias": False})):
        embedder = get_embedder("clap", model=str(folder), **{"fusion_seed": seed, **options})
        for name, mine in zip(long_clips, embedder.embed_audio([ref[f"clip|{n}"] for n in long_clips])):
            print(f"| {label} | {name} | {_cos(mine[0], laion[name]):.6f} |")
    window = get_embedder("clap-window", model=str(folder))
    for name, mine in zip(names, window.embed_audio([ref[f"clip|{n}"] for n in names])):
        print(f"| clap-window (window average, no int16 round trip) | {name} | {_cos(mine.mean(0), laion[name]):.6f} |")
    plain = get_embedder("clap", model=str(folder), fusion_seed=seed)
    name = "5 s (16 kHz origin)"
    features = plain.log_mel(repeat_pad(ref[f"clip|{name}"], plain.max_samples))  # no int16 round trip
    import torch

    with torch.no_grad():
        mine = plain.model.get_audio_features(input_features=torch.from_numpy(np.stack([features] * 4)[None]).float(),
                                              is_longer=torch.zeros((1, 1), dtype=torch.bool)).pooler_output[0]
    print(f"| clap without the int16 round trip | {name} | {_cos(mine.numpy(), laion[name]):.6f} |")


if __name__ == "__main__":
    {"reference": reference, "compare": compare}[sys.argv[1]](Path(sys.argv[2]), *sys.argv[3:4])

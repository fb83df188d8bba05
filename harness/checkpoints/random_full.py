"""Random-weight AudioLDM 2 checkpoints with exactly the published architectures.

Latency and memory do not depend on the weights' values, so a pipeline built from a published
checkpoint's component configs with random weights costs what the real one costs, and needs no
download. The configs ship with the package (``configs/<owner>--<name>/``, laid out like the
hub repositories; ``configs/README.md`` says which files are verbatim and which are derived).

- ``build_random_pipeline(like)``: the pipeline in memory, every component in eval mode.
- ``save_random_checkpoint(like, out_dir)``: a diffusers-format folder (safetensors).
- ``random_checkpoint_path(like)``: that folder, built once into the harness cache.
- ``parameter_counts(like)``: per-component sizes, computed on the meta device (no memory).

Weights: every parameter is created on the meta device first (so the models' own, slow default
initialisation never touches real memory) and then filled once from a seeded source
(``_NormalSource``: seeded offsets into one seeded pool of normals, at memory speed):
LeCun-normal (std = 1/sqrt(fan_in)) for Linear/Conv weights, which keeps activations near unit
scale through the deep stacks (finite in fp16, and the vocoder's output audible rather than
digital silence), N(0, 0.02) for embeddings and other free parameters, 1/0 for norm weights and
biases. The audio is noise: only the cost is meaningful.

Tokenizers are stand-ins built in code with the published vocabulary sizes and lengths:
a byte-level BPE of 50,265 tokens (RobertaTokenizerFast; model_max_length 512 as in the
published tokenizer_config.json), a Unigram of 32,000 pieces + 100 sentinels (T5TokenizerFast;
model_max_length 128, see configs/README.md) and, for the speech checkpoints, a 183-symbol
phoneme vocabulary (VitsTokenizer, pad id 0, model_max_length = the projection model's
max_seq_length).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from harness.checkpoints._cache import cached_folder
from harness.checkpoints.registry import CheckpointError

if TYPE_CHECKING:
    from diffusers import AudioLDM2Pipeline

LIKE = (
    "cvssp/audioldm2",
    "cvssp/audioldm2-large",
    "cvssp/audioldm2-music",
    "anhnct/audioldm2_gigaspeech",
    "anhnct/audioldm2_ljspeech",
)
RANDOM_VERSION = "1"

# Components with weights, in the order tables list them; the offsets seed each one separately
# (as tiny.py does), so one component's weights do not depend on the others.
MODEL_COMPONENTS = (
    "text_encoder",
    "text_encoder_2",
    "projection_model",
    "language_model",
    "unet",
    "vae",
    "vocoder",
)
_SEED_OFFSETS = {name: i + 1 for i, name in enumerate(MODEL_COMPONENTS)}

CONFIG_FILES = {
    **{name: f"{name}/config.json" for name in MODEL_COMPONENTS},
    "scheduler": "scheduler/scheduler_config.json",
    "feature_extractor": "feature_extractor/preprocessor_config.json",
    "tokenizer": "tokenizer/tokenizer_config.json",
}

_M = 1_000_000
_CVSSP_SIZES = {
    # configs/README.md: counted from cvssp/audioldm2's verbatim configs, which match the hub's
    # file sizes (UNet 1.39 GB fp32) and the model cards ("350M" UNet, "1.1B" in all). The
    # non-UNet components come from fixed upstream models (laion/clap-htsat-unfused,
    # google/flan-t5-large, gpt2), identical in all three cvssp checkpoints.
    "text_encoder": int(193.9 * _M),
    "text_encoder_2": int(341.2 * _M),
    "projection_model": int(1.2 * _M),
    "language_model": int(124.4 * _M),
    "unet": int(346.9 * _M),
    "vae": int(55.4 * _M),
    "vocoder": int(55.3 * _M),
    "total": int(1118.4 * _M),
}
_SPEECH_SIZES = {
    # Only what the hub shows for these repositories: unet/diffusion_pytorch_model.bin 1.05 GB
    # (= 261.9M fp32) and text_encoder/pytorch_model.bin 776 MB (= 193.9M fp32). The VITS
    # encoder, projection and the rest are derived, so there is nothing to compare them with.
    "unet": int(261.9 * _M),
    "text_encoder": int(193.9 * _M),
}
PUBLISHED_SIZES: dict[str, dict[str, int]] = {
    "cvssp/audioldm2": dict(_CVSSP_SIZES),
    "cvssp/audioldm2-music": dict(_CVSSP_SIZES),
    # Hub unet/diffusion_pytorch_model.safetensors 2.87 GB = 718M fp32; no published total.
    "cvssp/audioldm2-large": {
        **{k: v for k, v in _CVSSP_SIZES.items() if k != "total"},
        "unet": int(718.0 * _M),
    },
    "anhnct/audioldm2_gigaspeech": dict(_SPEECH_SIZES),
    "anhnct/audioldm2_ljspeech": dict(_SPEECH_SIZES),
}

_EMBED_STD = 0.02
_T5_MODEL_MAX_LENGTH = 128  # unknown on the hub (128 or 512); the conversion script sets 128
_ROBERTA_VOCAB = 50265
_T5_PIECES = 32000  # sentencepiece pieces; + 100 <extra_id_*> = 32100 (config vocab_size 32128)
_T5_EXTRA_IDS = 100
_VITS_END_ID = 182  # the pipeline writes this id at the first pad (id 0) of each transcription


# ---------------------------------------------------------------- packaged configs


def _check_like(like: str) -> str:
    if like not in LIKE:
        raise CheckpointError(
            f"no random-weight architecture for {like!r}; valid: {', '.join(LIKE)}"
        )
    return like.replace("/", "--")


def config_folder(like: str):
    """The packaged config folder of ``like`` (an importlib.resources Traversable)."""
    return resources.files("harness.checkpoints") / "configs" / _check_like(like)


@lru_cache(maxsize=None)
def _read_json(like: str, relative: str) -> str:
    return (config_folder(like) / relative).read_text(encoding="utf-8")


def packaged_config(like: str, component: str) -> dict[str, Any]:
    """The packaged (published or derived) config of one component, or ``"model_index"``."""
    relative = "model_index.json" if component == "model_index" else CONFIG_FILES[component]
    return json.loads(_read_json(like, relative))


def is_speech(like: str) -> bool:
    return packaged_config(like, "model_index")["text_encoder_2"][1] == "VitsModel"


# ---------------------------------------------------------------- model construction


def _class_for(like: str, component: str):
    library, name = packaged_config(like, "model_index")[component]
    if library == "transformers":
        import transformers

        return getattr(transformers, name)
    if library == "audioldm2":
        from diffusers.pipelines import audioldm2

        return getattr(audioldm2, name)
    import diffusers

    return getattr(diffusers, name)


def _construct(like: str, component: str) -> nn.Module:
    """The component built from its packaged config; its weights are whatever the model's
    constructor makes (call under a meta context to allocate nothing)."""
    cls = _class_for(like, component)
    config = packaged_config(like, component)
    if hasattr(cls, "config_class") and hasattr(cls.config_class, "from_dict"):  # transformers
        # The saved dtype describes the published weights (CLAP's says float64); the model is
        # built in the default dtype and cast explicitly.
        for key in ("torch_dtype", "dtype", "transformers_version"):
            config.pop(key, None)
        return cls(cls.config_class.from_dict(config))
    return cls.from_config(config)


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    # Parameters go to the meta device as they are registered, so the constructor's own
    # initialisation runs on meta tensors (free); buffers (position ids, relative-position
    # indices, ...) are computed for real, as they would be in a normal construction.
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(
                param.to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    return isinstance(module, norms) or type(module).__name__.endswith(("Norm", "LayerNorm"))


class _NormalSource:
    """Seeded standard-normal values, cheaply. Drawing 1.1 billion fresh normals takes 20-30 s
    on one core; instead one pool is drawn per component and each tensor copies it (scaled)
    from a seeded random offset, wrapping around: memory speed. Only tensors larger than the
    pool (the token-embedding tables) repeat values, which changes no cost."""

    POOL = 1 << 23  # 8M values, 32 MB; the largest non-embedding tensor (a UNet conv) has 3.7M

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = torch.randn(self.POOL, generator=self.generator)

    def normal(self, shape: torch.Size, std: float) -> torch.Tensor:
        out = torch.empty(shape)
        flat, n = out.view(-1), out.numel()
        start = int(torch.randint(self.POOL, (1,), generator=self.generator))
        pos = 0
        while pos < n:
            take = min(n - pos, self.POOL - start)
            torch.mul(self.pool[start : start + take], std, out=flat[pos : pos + take])
            pos, start = pos + take, 0
        return out


def _fill(module: nn.Module, name: str, shape: torch.Size, source: _NormalSource) -> torch.Tensor:
    """Deterministic fp32 values for one parameter (see the module docstring for the rule)."""
    leaf = name.rsplit(".", 1)[-1]
    if _is_norm(module):
        return torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
    if leaf == "bias" or "bias" in leaf and len(shape) == 1:
        return torch.zeros(shape)
    weighted = isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and leaf == "weight"
    if weighted and len(shape) >= 2:
        fan_in = shape[1:].numel()
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            # weight is (in, out, *kernel): each output sums in * kernel / stride inputs
            fan_in = shape[0] * max(1, shape[2:].numel() // math.prod(module.stride))
        return source.normal(shape, 1.0 / math.sqrt(fan_in))
    return source.normal(shape, _EMBED_STD)


def _materialize(model: nn.Module, seed: int, dtype: torch.dtype) -> nn.Module:
    """Replace every meta parameter with seeded values in ``dtype`` (ties kept)."""
    source = _NormalSource(seed)
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    done: dict[int, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        for name, param in list(module._parameters.items()):
            if param is None or not param.is_meta:
                continue
            if id(param) in done:  # tied (T5's shared embedding)
                module._parameters[name] = done[id(param)]
                continue
            full = f"{module_name}.{name}" if module_name else name
            target = dtype
            if dtype != torch.float32 and any(k in full.split(".") for k in keep_fp32):
                target = torch.float32  # as from_pretrained does (T5's "wo")
            values = _fill(module, full, param.shape, source).to(target)
            new = nn.Parameter(values, requires_grad=param.requires_grad)
            done[id(param)] = new
            module._parameters[name] = new
    for buffer_owner in model.modules():  # floating buffers follow the dtype too
        for name, buf in list(buffer_owner._buffers.items()):
            if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                buffer_owner._buffers[name] = buf.to(dtype)
    return model.eval()


def _random_model(like: str, component: str, seed: int, dtype: torch.dtype) -> nn.Module:
    # fork_rng: a constructor drawing from the global RNG must not change the caller's state.
    with torch.random.fork_rng(devices=[]), _parameters_on_meta():
        model = _construct(like, component)
    return _materialize(model, seed * 1000 + _SEED_OFFSETS[component], dtype)


# ---------------------------------------------------------------- tokenizers


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/RoBERTa's byte-level alphabet: printable bytes map to themselves, the rest to
    # code points from 256 on (so the space byte is "Ġ").
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_ENGLISH_ORDER = "etaoinshrdlcumwfgypbvkjxqz"
_PUNCTUATION = ".,'-\"!?:;()"


def _synthetic_tokens(
    ranked: list[str], count: int, plan: tuple[tuple[int, int], ...]
) -> list[tuple[str, str]]:
    """``count`` (left, right) pairs whose concatenations are new tokens, level by level: the
    first ``n_left`` tokens of the previous level, each extended by the first ``n_right``
    characters of ``ranked``. Deterministic; every left part exists before it is used."""
    pairs: list[tuple[str, str]] = []
    seen = set(ranked)
    lefts = ranked
    for n_left, n_right in plan:
        level = []
        for left in lefts[:n_left]:
            for right in ranked[:n_right]:
                token = left + right
                if token in seen:
                    continue
                seen.add(token)
                pairs.append((left, right))
                level.append(token)
                if len(pairs) == count:
                    return pairs
        lefts = level
    raise RuntimeError(f"synthetic vocabulary plan yields {len(pairs)} < {count} tokens")


def _roberta_tokenizer(config: dict[str, Any]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import RobertaTokenizerFast

    # RoBERTa's layout: <s> <pad> </s> <unk> = 0..3, 256 byte symbols, merges, <mask> last.
    alphabet = _bytes_to_unicode()
    order = (" " + _ENGLISH_ORDER + _ENGLISH_ORDER.upper() + "0123456789" + _PUNCTUATION).encode()
    ranked_bytes = list(dict.fromkeys([*order, *range(256)]))
    ranked = [alphabet[b] for b in ranked_bytes]
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    n_merges = _ROBERTA_VOCAB - len(specials) - len(ranked) - 1
    merges = _synthetic_tokens(ranked, n_merges, ((256, 160), (600, 40), (4000, 20)))
    tokens = [*specials, *ranked, *(a + b for a, b in merges), "<mask>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=config["add_prefix_space"])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]), trim_offsets=config["trim_offsets"]
    )
    keys = ("bos_token", "eos_token", "sep_token", "cls_token", "unk_token", "pad_token",
            "mask_token", "add_prefix_space", "trim_offsets", "errors", "model_max_length",
            "padding_side", "clean_up_tokenization_spaces")
    return RobertaTokenizerFast(tokenizer_object=tok, **{k: config[k] for k in keys})


def _t5_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # T5 ids: pad 0, eos 1, unk 2
    ranked = list("▁" + _ENGLISH_ORDER + _ENGLISH_ORDER.upper() + "0123456789" + _PUNCTUATION)
    n_long = _T5_PIECES - len(specials) - len(ranked)
    pairs = _synthetic_tokens(ranked, n_long, ((80, 80), (1500, 27), (4000, 20)))
    # Scores as log-probabilities: longer and earlier pieces win, single characters last.
    pieces = [
        (left + right, round(-2.0 - 1 / len(left + right) - i * 1e-4, 6))
        for i, (left, right) in enumerate(pairs)
    ]
    pieces += [(c, round(-12.0 - i * 0.01, 6)) for i, c in enumerate(ranked)]
    tok = Tokenizer(models.Unigram([*specials, *pieces], unk_id=2))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok, extra_ids=_T5_EXTRA_IDS, model_max_length=_T5_MODEL_MAX_LENGTH
    )


# The original VITS symbol set (pad, punctuation, letters, IPA), which espeak-ng output maps
# onto; the AudioLDM 2 speech phoneme encoder has 183 symbols (n_vocab 183).
_VITS_PUNCTUATION = ';:,.!?¡¿—…"«»“” '
_VITS_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VITS_IPA = (
    "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢ"
    "ǀǁǂǃˈˌːˑʼʴʰʱʲʷˠˤ˞↓↑→↗↘'̩'ᵻ"
)


def _vits_vocab(size: int) -> dict[str, int]:
    # Pad "_" must be id 0 and id 182 must exist: the pipeline overwrites the first id 0 of
    # each transcription with 182 as an end marker. <unk>, fillers, then <eos> at 182.
    symbols = list(dict.fromkeys(["_", *_VITS_PUNCTUATION, *_VITS_LETTERS, *_VITS_IPA, "<unk>"]))
    symbols += [f"<sym{i}>" for i in range(_VITS_END_ID - len(symbols))]
    symbols.append("<eos>")
    symbols += [f"<sym{i}>" for i in range(len(symbols), size)]
    if symbols.index("<eos>") != _VITS_END_ID or len(symbols) != size:
        raise RuntimeError(f"VITS vocabulary of {size} cannot hold {_VITS_END_ID + 1} symbols")
    return {s: i for i, s in enumerate(symbols)}


def _vits_tokenizer(vocab_size: int, model_max_length: int):
    from harness.checkpoints.tiny import vits_tokenizer

    # phonemize=True as the published speech checkpoints (phonemizer + espeak-ng at call time,
    # a real CPU cost of the encoding stage).
    return vits_tokenizer(_vits_vocab(vocab_size), model_max_length, phonemize=True)


def _tokenizers(like: str):
    tokenizer = _roberta_tokenizer(packaged_config(like, "tokenizer"))
    if is_speech(like):
        vits = packaged_config(like, "text_encoder_2")
        projection = packaged_config(like, "projection_model")
        return tokenizer, _vits_tokenizer(vits["vocab_size"], projection["max_seq_length"])
    return tokenizer, _t5_tokenizer()


# ---------------------------------------------------------------- public API


def build_random_pipeline(
    like: str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> "AudioLDM2Pipeline":
    """The pipeline with ``like``'s published architecture and seeded random weights, in
    ``dtype`` (T5's feed-forward output stays fp32, as from_pretrained keeps it), eval mode."""
    _check_like(like)
    from diffusers import AudioLDM2Pipeline

    tokenizer, tokenizer_2 = _tokenizers(like)
    models = {name: _random_model(like, name, seed, dtype) for name in MODEL_COMPONENTS}
    scheduler_cls = _class_for(like, "scheduler")
    extractor_cls = _class_for(like, "feature_extractor")
    return AudioLDM2Pipeline(
        **models,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=extractor_cls.from_dict(packaged_config(like, "feature_extractor")),
        scheduler=scheduler_cls.from_config(packaged_config(like, "scheduler")),
    )


def save_random_checkpoint(like: str, out_dir: Path, seed: int = 0) -> Path:
    """Write ``like``'s random-weight pipeline (fp32 safetensors) to ``out_dir``; returns it."""
    _check_like(like)
    out_dir = Path(out_dir)
    pipe = build_random_pipeline(like, seed)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        pipe.save_pretrained(out_dir, safe_serialization=True)
    finally:
        transformers_logging.enable_progress_bar()
    del pipe
    # The published class names (transformers 5 saves the *Fast tokenizers under their base
    # names; GPT2Model etc. are unchanged), so the folder's model_index matches the hub's.
    index_path = out_dir / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    published = packaged_config(like, "model_index")
    for key, value in published.items():
        if not key.startswith("_"):
            index[key] = value
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def random_checkpoint_path(like: str, cache_dir: Path | None = None) -> Path:
    """The cached random-weight ``like`` folder (seed 0), built once (atomically) if absent."""
    name = f"random-{_check_like(like)}-{RANDOM_VERSION}"
    return cached_folder(name, lambda tmp: save_random_checkpoint(like, tmp), cache_dir)


@lru_cache(maxsize=None)
def _counts(like: str) -> tuple[tuple[str, int], ...]:
    counts = []
    with torch.device("meta"):
        for name in MODEL_COMPONENTS:
            model = _construct(like, name)
            counts.append((name, sum(p.numel() for p in model.parameters())))
    return tuple(counts)


def parameter_counts(like: str) -> dict[str, int]:
    """Parameters per component with weights (tied weights once), built on the meta device."""
    _check_like(like)
    return dict(_counts(like))


def format_parameter_table(like: str) -> list[tuple[str, int, int | None]]:
    """(component, ours, published or None) per component, then ("total", ...)."""
    counts = parameter_counts(like)
    published = PUBLISHED_SIZES[like]
    rows = [(name, n, published.get(name)) for name, n in counts.items()]
    rows.append(("total", sum(counts.values()), published.get("total")))
    return rows

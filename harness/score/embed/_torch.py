"""Weights helpers shared by the model-based embedders: checksums, checkpoint files, seeding."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from harness.checkpoints._cache import default_cache_dir
from harness.score.embed.registry import Embedder, EmbedderError


def local_weights_path(env_var: str, file_name: str) -> Path:
    """The weights file named by ``$env_var``, else ``<harness cache>/weights/<file_name>``."""
    env = os.environ.get(env_var)
    return Path(env) if env else default_cache_dir() / "weights" / file_name


def full_float32() -> None:
    """Turn TF32 off for cuDNN convolutions and CUDA matmuls (process-wide). On Ampere and later
    cuDNN uses TF32 by default, which moves embeddings and logits by about 1e-3 relative: scores
    on a GPU must agree with the CPU's and with the reference code's float32."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def state_dict_sha256(module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every state-dict entry, sorted by name."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_state_dict(model, path: Path, name: str, ignore: tuple[str, ...] = (),
                    check: dict[str, Any] | None = None) -> None:
    """Load a checkpoint file into ``model`` with strict key checking.

    Keys starting with an ``ignore`` prefix are dropped (fixed front-end kernels the module
    computes itself); tensors named in ``check`` must equal the given ones (to 1e-5), so a file
    made with another front end is refused instead of giving quietly different embeddings.
    """
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise EmbedderError(f"{name}: cannot read weights file {path}: {type(err).__name__}: {err}") from None
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
    for key, expected in (check or {}).items():
        if key in state and not torch.allclose(state[key].float(), expected.float().to("cpu"), atol=1e-5):
            raise EmbedderError(f"{name}: {path} holds a different {key} than this front end computes; "
                                "it was made for other settings")
    state = {k: v for k, v in state.items() if not k.startswith(ignore) and k not in (check or {})}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:300]
        raise EmbedderError(f"{name}: {path} does not fit the model ({first}); is it the right file?") from None


def seeded_module(seed: int, make: Callable[[], Any]) -> Any:
    """Build a module with torch's RNG seeded, leaving the global RNG state as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


class TorchEmbedder(Embedder):
    """Base of the torch-network embedders: the network in eval mode on a device, either loaded
    from a weights file (``_from_file``) or built with seeded random weights (``_random``)."""

    weights_path: Path | None = None
    seed: int | None = None

    def _from_file(self, path: Path, build: Callable[[], Any], device: str, missing: str, **load: Any) -> None:
        """Build the network and load ``path`` into it; ``missing`` (with ``{path}``) is the error without a file."""
        self.weights_path = path
        if not path.is_file():
            raise EmbedderError(missing.format(path=path))
        model = build()
        load_state_dict(model, path, self.name, **load)
        self._setup(model, device)

    def _random(self, seed: int, build: Callable[[], Any], device: str) -> None:
        """Build the network with torch seeded (tests: the weights are random but reproducible)."""
        self.seed = seed
        self._setup(seeded_module(seed, build), device)

    def _setup(self, model, device: str) -> None:
        self.device = device
        self.model = model.eval().to(device)
        self._dim = int(self.output_features(model))
        self._weights_sha256 = state_dict_sha256(self.model)

    def output_features(self, model) -> int:
        """Width of the network's embedding output."""
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return self._dim

    def weights_sha256(self) -> str:
        return self._weights_sha256

    def source(self) -> dict[str, Any]:
        if self.weights_path is not None:
            return {"weights": str(self.weights_path)}
        return {"model": f"{self.name} (built in memory)", "seed": self.seed}

"""Hugging Face Hub access: the one message for weights that are neither local nor downloadable."""

from __future__ import annotations

import os


def offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within ``timeout_s`` (no retries).

    huggingface_hub retries a failed request five times with back-off (about 25-35 s) before it
    says the machine is offline; this probe lets a missing model fail at once instead."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def missing_weights_message(what: str, repo_id: str, revision: str | None, err: Exception, local_hint: str) -> str:
    """'cannot load <what> <repo_id>: ...', with the cache folder, the reason and the `hf download` command."""
    from huggingface_hub import constants

    rev = f" (revision {revision})" if revision else ""
    reason = "HF_HUB_OFFLINE=1 forbids downloading" if offline() else "downloading failed"
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return (
        f"cannot load {what}{repo_id}{rev}: not a local folder, not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}), and {reason} [{type(err).__name__}: {first_line}]. "
        f"Get it on a machine with network: `hf download {repo_id}"
        f"{' --revision ' + revision if revision else ''}` (copy the cache folder over, or point "
        f"HF_HOME at it), or {local_hint}"
    )

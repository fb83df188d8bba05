"""Cross-check: the WER normaliser (transformers' EnglishTextNormalizer + the vendored spelling
map, ``harness.score.metrics.wer.normalise``) against openai-whisper's own
``whisper.normalizers.EnglishTextNormalizer`` on tricky strings (numbers, currencies,
contractions, punctuation, titles, British spellings, diacritics, fillers).

openai-whisper is not installed beside the harness (it pulls numba, tiktoken and its own torch
pins); its normaliser is pure Python on ``regex`` and ``more-itertools``, so a throwaway venv
with those two runs the files of ``whisper/normalizers`` straight from the openai-whisper sdist,
without importing ``whisper``::

    pip download --no-deps --no-binary :all: openai-whisper==20250625 -d /tmp/ow
    tar xzf /tmp/ow/openai_whisper-20250625.tar.gz -C /tmp/ow
    python3 -m venv /tmp/ow-venv && /tmp/ow-venv/bin/pip install -q regex more-itertools
    python benchmarks/normaliser_crosscheck.py /tmp/ow/openai_whisper-20250625 /tmp/ow-venv/bin/python

Prints one Markdown row per string and exits 1 if any output differs.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

TRICKY = [
    # numbers and currencies
    "I have twenty five apples and one hundred and one oranges.",
    "It costs $5.50, or £20, or €1,000,000.",
    "one two three", "the 1st, 2nd and 23rd of May", "nineteen ninety nine", "ten percent, 10%",
    "three point one four", "It's 10:30 a.m.", "a million and a half", "double zero seven",
    # contractions
    "I won't, you can't, let's go; they've said I'm fine and she'd've known.",
    "Y'all gonna wanna see this, ain't it?",
    # punctuation, brackets, hyphens, fillers
    "Hello, world! Well... maybe? Yes -- no.", "[laughs] (inaudible) okay", "state-of-the-art e.g. i.e.",
    "Um, uh, hmm, I think so.", "\"Quoted\" 'single' text", "mr. smith and dr. jones met st. john",
    # British spellings and diacritics
    "The colour of the centre was analysed and organised.", "She travelled to the theatre in grey pyjamas.",
    "café naïve Œuvre façade", "Mrs. O'Neill's programme, licence and defence",
]


def load_openai_normaliser(sdist: Path):
    """openai-whisper's EnglishTextNormalizer from an unpacked sdist, without importing ``whisper``."""
    folder = sdist / "whisper" / "normalizers"
    spec = importlib.util.spec_from_file_location("ow_normalizers", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ow_normalizers"] = module
    spec.loader.exec_module(module)
    return module.EnglishTextNormalizer()


def main(argv: list[str]) -> int:
    """Compare both normalisers on TRICKY; print a Markdown table."""
    if len(argv) == 2 and argv[0] == "--openai":  # inside the throwaway venv
        theirs = load_openai_normaliser(Path(argv[1]))
        print(json.dumps([theirs(t) for t in TRICKY]))
        return 0
    if len(argv) != 2:
        print(__doc__)
        return 2
    from harness.score.metrics.wer import normalise

    out = subprocess.run([argv[1], __file__, "--openai", argv[0]], check=True, capture_output=True, text=True)
    differ = 0
    print("| input | harness (transformers) | openai-whisper | same |\n|---|---|---|---|")
    for text, b in zip(TRICKY, json.loads(out.stdout), strict=True):
        a = normalise(text)
        differ += a != b
        print(f"| {text} | {a} | {b} | {'yes' if a == b else '**no**'} |")
    print(f"\n{len(TRICKY) - differ} of {len(TRICKY)} strings normalise identically.")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""A download-free CLIP tokenizer: byte-level vocabulary, no merges.

Every one of the 256 byte symbols (alone and with the end-of-word marker ``</w>``) is a token, plus
``<|startoftext|>`` and ``<|endoftext|>``: 514 tokens. It is a valid ``CLIPTokenizer`` and needs nothing
from the hub, which is what the tiny built-in checkpoints want.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

VOCAB_SIZE = 514


def _byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable-unicode table, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def save_byte_tokenizer(folder: Path, pad_token: str | None = None) -> CLIPTokenizer:
    """Write vocab.json + merges.txt to ``folder`` and return the loaded, saved tokenizer.

    ``pad_token="!"`` makes SDXL's second tokenizer (OpenCLIP pads with '!', not end-of-text)."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    extra = {"pad_token": pad_token} if pad_token is not None else {}
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, **extra
    )
    tokenizer.save_pretrained(folder)
    return tokenizer

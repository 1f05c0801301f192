"""Derive the real CLIP BPE tokenizer files (49,408 tokens) that sdflow ships for single-file loading.

Source: ``bpe_simple_vocab_16e6.txt.gz``, the BPE merge list OpenAI published with CLIP and that the
``open-clip-torch`` package on PyPI ships (MIT licence). Fetch it without installing anything:

    pip download --no-deps open-clip-torch -d /tmp/oc
    python tools/make_clip_tokenizer.py /tmp/oc/open_clip_torch-*.whl   # or the .txt.gz itself

The vocabulary is rebuilt the way CLIP builds it: the 256 byte symbols, the same with ``</w>``, the
first 48,894 merges joined, then ``<|startoftext|>`` and ``<|endoftext|>``. The files are written to
``sdflow/models/configs/<family>/tokenizer*/`` for every tokenizer there: CLIP ViT-L (SD 1.x, SDXL's
first) pads with ``<|endoftext|>``, OpenCLIP (SD 2.x, SDXL's second) with ``!``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

from transformers import CLIPTokenizer

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # CLIP keeps this many merges: vocabulary 49,408 with the specials
CONFIGS = Path(__file__).resolve().parent.parent / "sdflow" / "models" / "configs"
# tokenizer folder under CONFIGS -> padding token (OpenCLIP's, SD 2.x's and SDXL's second, pad with '!')
PAD_TOKENS = {
    "sd15/tokenizer": "<|endoftext|>",
    "sd2/tokenizer": "!",
    "sdxl/tokenizer": "<|endoftext|>",
    "sdxl/tokenizer_2": "!",
    "sdxl_refiner/tokenizer_2": "!",
}


def clip_byte_symbols() -> list[str]:
    """GPT-2's byte -> printable-unicode table in CLIP's order: printable bytes first, then the rest."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def read_merges(source: Path) -> list[str]:
    """The merge lines (``'a b'``) from the .txt.gz or from a wheel holding it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(BPE_NAME))
            data = gzip.decompress(wheel.read(member))
    else:
        data = gzip.decompress(source.read_bytes())
    lines = data.decode("utf-8").split("\n")
    return lines[1 : MERGES + 1]  # line 0 is a version comment


def write_tokenizer(folder: Path, merges: list[str], pad_token: str) -> CLIPTokenizer:
    """vocab.json, merges.txt and the tokenizer configs in ``folder``; returns the saved tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = clip_byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != 49408:
        raise ValueError(f"expected 49408 distinct tokens, got {len(vocab)}")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token, model_max_length=77
    )
    tokenizer.save_pretrained(folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)  # 3.6 MB, rebuilt from vocab + merges
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help=f"{BPE_NAME} or an open_clip_torch wheel")
    args = parser.parse_args(argv)
    merges = read_merges(args.source)
    for folder, pad in PAD_TOKENS.items():
        tokenizer = write_tokenizer(CONFIGS / folder, merges, pad)
        ids = tokenizer("a photo of a cat").input_ids
        print(f"{folder}: {len(tokenizer)} tokens, pad {pad!r}, 'a photo of a cat' -> {ids}")


if __name__ == "__main__":
    main()

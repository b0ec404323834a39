"""Copies of transformers-5 model folders that transformers 4.37 (the official LangBridge code's version) reads the
same way, and a LangBridge checkpoint in the official code's format with the same weights as ours.

transformers 5 writes four things 4.37 misreads or refuses:
- `tokenizer_config.json` names the class `TokenizersBackend` (4.37 knows no such class): the generic
  `PreTrainedTokenizerFast`, which reads tokenizer.json as it is, takes its place; a named class of 4.37
  (`XLMRobertaTokenizer`, `GPT2Tokenizer`, ...) stays, and AutoTokenizer picks its fast variant;
- BPE merges in tokenizer.json as pairs `["a", "b"]`: tokenizers 0.15 reads only strings `"a b"`;
- Metaspace pre-tokenizers and decoders with a `split` field (tokenizers >= 0.19): 0.15 wants `add_prefix_space`
  (and `prepend_scheme`) instead;
- `rope_parameters: {rope_theta, rope_type}` in config.json: 4.37 reads `rope_theta` (and `rope_scaling`); without
  them it silently falls back to rope_theta=10000, which changes every logit of SmolLM2 (rope_theta 100000).
  Also `dtype` is `torch_dtype` there.
The chat template, which 5 writes to chat_template.jinja, goes into tokenizer_config.json where 4.37 reads it.

Everything here is plain JSON work plus torch/safetensors for the checkpoint, so it runs (and is tested) without
the official code or transformers 4.37.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Keys transformers 5 writes into tokenizer_config.json that mean nothing (or something else) to 4.37.
DROPPED_TOKENIZER_KEYS = ("backend", "is_local", "local_files_only")


# ---------------------------------------------------------------------------------------------------------------
# config.json
def legacy_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """A transformers-5 config dict as transformers 4.37 reads it (rope_theta at the top level, torch_dtype)."""
    out = copy.deepcopy(config)
    rope = out.pop("rope_parameters", None)
    if isinstance(rope, dict) and rope:
        if "rope_theta" in rope:
            out["rope_theta"] = rope["rope_theta"]
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
        if rope_type != "default":
            # 4.37's Llama takes rope_scaling = {"type": "linear"|"dynamic", "factor": f} and nothing else.
            if rope_type not in ("linear", "dynamic") or set(scaling) - {"factor"}:
                raise ValueError(
                    f"rope_parameters {rope} have no transformers 4.37 equivalent (it knows linear/dynamic "
                    "scaling with a factor only)."
                )
            out["rope_scaling"] = {"type": rope_type, "factor": scaling["factor"]}
        else:
            out["rope_scaling"] = None
    if "dtype" in out:
        out["torch_dtype"] = out.pop("dtype")
    return out


# ---------------------------------------------------------------------------------------------------------------
# tokenizer.json
def _legacy_component(node: Any) -> Any:
    """Rewrite Metaspace components (possibly inside a Sequence) for tokenizers 0.15."""
    if isinstance(node, list):
        return [_legacy_component(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _legacy_component(v) for k, v in node.items()}
    if node.get("type") == "Metaspace":
        node.pop("split", None)
        scheme = node.get("prepend_scheme", "always")
        node["prepend_scheme"] = scheme
        node["add_prefix_space"] = scheme != "never"
    return node


def legacy_tokenizer_json(data: dict[str, Any]) -> dict[str, Any]:
    """A transformers-5 tokenizer.json as tokenizers 0.15 reads it: BPE merges as "a b" strings, Metaspace with
    add_prefix_space instead of split."""
    out = copy.deepcopy(data)
    model = out.get("model") or {}
    merges = model.get("merges")
    if model.get("type") == "BPE" and merges:
        strings = []
        for merge in merges:
            if isinstance(merge, str):
                strings.append(merge)
                continue
            left, right = merge
            if " " in left or " " in right:
                raise ValueError(
                    f"BPE merge {merge!r} contains a space: tokenizers 0.15's 'a b' merge format cannot hold it."
                )
            strings.append(f"{left} {right}")
        model["merges"] = strings
    for key in ("pre_tokenizer", "decoder", "normalizer", "post_processor"):
        if out.get(key) is not None:
            out[key] = _legacy_component(out[key])
    return out


def legacy_tokenizer_config(config: dict[str, Any], chat_template: str | None = None) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in DROPPED_TOKENIZER_KEYS}
    if out.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        out["tokenizer_class"] = "PreTrainedTokenizerFast"
    if chat_template is not None and "chat_template" not in out:
        out["chat_template"] = chat_template
    return out


# ---------------------------------------------------------------------------------------------------------------
# Folders
def write_legacy_copy(src: str | Path, dst: str | Path, weights: bool = False) -> Path:
    """Copy the model folder `src` (config.json, generation_config.json, tokenizer files as transformers 5 writes
    them) to `dst` in the form transformers 4.37 reads; with `weights`, link (or copy) *.safetensors too."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    _write_json(dst / "config.json", legacy_model_config(config))
    if (src / "generation_config.json").is_file():
        generation = json.loads((src / "generation_config.json").read_text(encoding="utf-8"))
        generation.pop("transformers_version", None)
        _write_json(dst / "generation_config.json", generation)
    if (src / "tokenizer.json").is_file():
        tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
        _write_json(dst / "tokenizer.json", legacy_tokenizer_json(tokenizer), indent=None)
        template_file = src / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
        tok_config_file = src / "tokenizer_config.json"
        tok_config = (
            json.loads(tok_config_file.read_text(encoding="utf-8")) if tok_config_file.is_file() else {}
        )
        _write_json(dst / "tokenizer_config.json", legacy_tokenizer_config(tok_config, template))
        if (src / "special_tokens_map.json").is_file():
            shutil.copy2(src / "special_tokens_map.json", dst / "special_tokens_map.json")
    if weights:
        for f in sorted(src.glob("*.safetensors")) + sorted(src.glob("*.safetensors.index.json")):
            target = dst / f.name
            if target.exists() or target.is_symlink():
                target.unlink()
            try:
                target.symlink_to(f.resolve())
            except OSError:
                shutil.copy2(f, target)
    return dst


def _write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# The LangBridge checkpoint in the official format
def official_state_dict(
    state: dict[str, Any], lm_base: str = "model", head: str = "lm_head"
) -> dict[str, Any]:
    """Our state dict (encoder.*, bridge.*, lm.<base>.*, lm.<head>.*) under the official keys (lb.enc.*,
    lb.alignment.*, lb.lm.*, lb.lm_head.*, lb.embeddings.*): the inverse of convert_official.map_official_keys.
    A tied head missing from `state` is written from the input embeddings, as are lb.embeddings.*. Tensors are
    cloned (safetensors does not store shared tensors)."""
    out: dict[str, Any] = {}
    embed_key = f"lm.{lm_base}.embed_tokens.weight"
    for key, tensor in state.items():
        if key.startswith("encoder."):
            new = "lb.enc." + key[len("encoder.") :]
        elif key.startswith("bridge."):
            new = "lb.alignment." + key[len("bridge.") :]
        elif key.startswith(f"lm.{head}."):
            new = "lb.lm_head." + key[len(f"lm.{head}.") :]
        elif key.startswith(f"lm.{lm_base}."):
            new = "lb.lm." + key[len(f"lm.{lm_base}.") :]
        else:
            raise ValueError(f"Unexpected key {key!r} in a LangBridge state dict.")
        out[new] = tensor.detach().clone().contiguous()
    if embed_key not in state:
        raise ValueError(f"{embed_key} is missing: is this a Llama-family LM under lm.{lm_base}?")
    out.setdefault("lb.lm_head.weight", state[embed_key].detach().clone().contiguous())
    out["lb.embeddings.weight"] = state[embed_key].detach().clone().contiguous()
    return out


def official_config(
    enc: str, lm: str, dim_enc: int, dim_lm: int, alignments: str = "linear"
) -> dict[str, Any]:
    """config.json of the official LangBridgeConfig (langbridge/configuration_langbridge.py)."""
    return {
        "architectures": ["LangBridgeModel"],
        "enc": enc,
        "lm": lm,
        "dim_enc": dim_enc,
        "dim_lm": dim_lm,
        "alignments": alignments,
        "freeze_language_model": True,
        "freeze_encoder": True,
    }


def write_official_checkpoint(model: Any, dst: str | Path, enc_dir: str | Path, lm_dir: str | Path) -> Path:
    """Our LangBridgeModel `model` as an official checkpoint at `dst` whose config points at the (4.37-readable)
    encoder and LM folders. Only what the official code can hold is accepted: a plain linear or FFN bridge on the
    last encoder layer, without norms."""
    from safetensors.torch import save_file

    cfg = model.config
    if cfg.bridge_type not in ("linear", "ffn"):
        raise ValueError(
            f"bridge_type={cfg.bridge_type!r}: the official code has linear and ffn bridges only."
        )
    if getattr(cfg, "encoder_layer_mix", False) or getattr(cfg, "bridge_input_norm", False):
        raise ValueError("Layer mixing and input norms have no official counterpart.")
    if getattr(cfg, "soft_token_norm", None) not in (None, 0, False):
        raise ValueError("soft_token_norm has no official counterpart.")
    if getattr(cfg, "ffn_multiplier", 2) != 2 and cfg.bridge_type == "ffn":
        raise ValueError("The official FFN bridge has multiplier 2.")
    names = {id(module): name for name, module in model.lm.named_modules()}
    lm_base, head = names[id(model.lm.base_model)], names[id(model.lm.get_output_embeddings())]
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    state = official_state_dict(model.state_dict(), lm_base=lm_base, head=head)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = official_config(
        str(Path(enc_dir).resolve()),
        str(Path(lm_dir).resolve()),
        cfg.encoder_hidden_size,
        cfg.lm_hidden_size,
        cfg.bridge_type,
    )
    _write_json(dst / "config.json", config)
    return dst

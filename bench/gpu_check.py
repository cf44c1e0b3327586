"""GPU figures for the cluster profile's Whisper stage, with no hub, vLLM or Ray.

Builds Whisper ``large-v3-turbo``'s architecture from its published config with random weights
(speed does not depend on the weights' values), forces every clip to decode exactly ``--tokens``
tokens, and runs the *shipped* stage classes (``WhisperFeatures``, ``HFWhisperTranscriber``) on
synthetic 5 s clips.  It measures:

- clips/s of the transcriber at the seed's batch 2 and the cluster profile's batch (and more);
- log-mel features on the CPU (one actor, as the cluster profile runs them) vs on the GPU;
- the FLOPs of one clip (counted by torch) against the GPU's measured fp16 matmul rate.

    python -m bench.gpu_check                        # on a GPU machine, about 3-5 minutes
    python -m bench.gpu_check --tiny --device cpu    # a seconds-long check of this script on a CPU

Each arm's result is written to the JSON file as soon as it finishes; a failing arm is recorded
with its error and the rest go on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.columns import DURATION, ERROR, FEATURES, LOCALE, STAGE
from pipeline.config import TranscriberConfig, build_config
from pipeline.stages.transcribe import HFWhisperTranscriber, WhisperFeatures

SAMPLE_RATE = 16_000
RESULTS = Path(__file__).resolve().parent / "results"

# openai/whisper-large-v3-turbo's config.json (the architecture fields that set its cost).
LARGE_V3_TURBO = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 4,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "vocab_size": 51866,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
TINY = {
    "d_model": 64,
    "encoder_layers": 1,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 128,
    "decoder_layers": 1,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 128,
    "num_mel_bins": 128,
    "vocab_size": 51866,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
# large-v3's 100 languages in token order: <|en|> is 50259, ..., <|yue|> is 50358.
LANGS = str.split(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la "
    "mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be "
    "tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
)


def build_model(path: Path, arch: dict[str, int], tokens: int, dtype: str) -> dict[str, Any]:
    """Save a randomly initialised Whisper with large-v3's special tokens and preprocessor."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    eot, sot = 50257, 50258
    lang_to_id = {f"<|{code}|>": 50259 + i for i, code in enumerate(LANGS)}
    transcribe, translate, no_ts = 50360, 50359, 50364
    cfg = WhisperConfig(
        **arch,
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = WhisperForConditionalGeneration(cfg).to(getattr(torch, dtype))
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": transcribe, "translate": translate},
        no_timestamps_token_id=no_ts,
        max_length=arch["max_target_positions"],
        # Random weights would stop anywhere; every clip decodes exactly `tokens` tokens instead.
        min_new_tokens=tokens,
    )
    model.generation_config = gen
    model.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=arch["num_mel_bins"]).save_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    del model
    return {"params": params, "build_s": time.perf_counter() - t0}


def clips(n: int, seconds: float = 5.0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = [0.1 * np.sin(2 * np.pi * (200 + 10 * i) * t) for i in range(n)]
    return [(x + 0.01 * rng.standard_normal(t.size)).astype(np.float32) for x in tone]


def audio_batch(arrs: list[np.ndarray]) -> pa.Table:
    n = len(arrs)
    return pa.table(
        {
            "arr": pa.array([a.tolist() for a in arrs], pa.list_(pa.float32())),
            DURATION: pa.array([a.size / SAMPLE_RATE for a in arrs], pa.float64()),
            ERROR: pa.array([None] * n, pa.string()),
            STAGE: pa.array([None] * n, pa.string()),
            LOCALE: pa.array(["en"] * n),
        }
    )


def with_features(feats: np.ndarray, seconds: float = 5.0) -> pa.Table:
    n = feats.shape[0]
    return pa.table(
        {
            FEATURES: pa.array(list(feats.astype(np.float32).reshape(n, -1)), pa.list_(pa.float32())),
            DURATION: pa.array([seconds] * n, pa.float64()),
            ERROR: pa.array([None] * n, pa.string()),
        }
    )


class Timer:
    def __init__(self, device: str):
        import torch

        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def __call__(self, fn: Callable[[], Any], reps: int = 1) -> float:
        self.sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / reps


def matmul_ceiling(device: str, dtype: str, size: int) -> dict[str, Any]:
    import torch

    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    timer = Timer(device)
    timer(lambda: a @ b, reps=3)
    s = timer(lambda: a @ b, reps=10)
    return {"size": size, "dtype": dtype, "tflops": 2 * size**3 / s / 1e12}


def flops_per_clip(transcriber: HFWhisperTranscriber, batch: pa.Table) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        transcriber(batch)
    return counter.get_total_flops() / batch.num_rows


def transcriber_rate(transcriber: HFWhisperTranscriber, feats: np.ndarray, batch: int, timer: Timer) -> dict[str, Any]:
    import torch

    n_batches = max(4, math.ceil(feats.shape[0] / batch))
    tables = [with_features(feats[np.arange(i * batch, (i + 1) * batch) % feats.shape[0]]) for i in range(n_batches)]
    transcriber(tables[0])  # warm-up: kernels, allocator
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    s = timer(lambda: [transcriber(t) for t in tables])
    out = {"batch": batch, "clips": n_batches * batch, "wall_s": s, "clips_per_s": n_batches * batch / s}
    if torch.cuda.is_available():
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def decode_breakdown(transcriber: HFWhisperTranscriber, feats: np.ndarray, batch: int, timer: Timer) -> dict[str, Any]:
    """Seconds per batch for the encoder, ``generate`` bare and with scores, and the whole stage call."""
    import torch

    model = transcriber.engine.model
    x = torch.from_numpy(feats[np.arange(batch) % feats.shape[0]]).to(
        transcriber.engine.device, transcriber.engine.dtype
    )
    table = with_features(feats[np.arange(batch) % feats.shape[0]])
    n = transcriber.cfg.max_new_tokens
    with torch.inference_mode():
        enc = model.get_encoder()(x)
        bare = dict(max_new_tokens=n, language=["en"] * batch, task="transcribe")
        scored = dict(bare, return_dict_in_generate=True, output_scores=True)
        model.generate(encoder_outputs=enc, **bare)
        times = {
            "encoder_s": timer(lambda: model.get_encoder()(x), reps=3),
            "generate_s": timer(lambda: model.generate(encoder_outputs=enc, **bare), reps=3),
            "generate_dict_s": timer(
                lambda: model.generate(encoder_outputs=enc, **dict(bare, return_dict_in_generate=True)), reps=3
            ),
            "generate_scores_s": timer(lambda: model.generate(encoder_outputs=enc, **scored), reps=3),
        }
        seqs = model.generate(encoder_outputs=enc, **dict(bare, return_dict_in_generate=True)).sequences
        times["teacher_forced_s"] = timer(
            lambda: model(encoder_outputs=enc, decoder_input_ids=seqs[:, :-1]).logits.float().log_softmax(-1), reps=3
        )
        # The static-cache greedy loop (eager step) on the same encoder output, confidence included.
        from pipeline.engines.static_decoder import StaticDecoder

        static = StaticDecoder(model, n)
        rest = torch.tensor([transcriber.engine.prompt("en")[1:]] * batch)
        hidden, sot = enc.last_hidden_state, transcriber.engine.sot
        static.decode(hidden, sot, lambda first: rest)
        times["static_decode_s"] = timer(lambda: static.decode(hidden, sot, lambda first: rest), reps=3)
    times["stage_call_s"] = timer(lambda: transcriber(table), reps=3)
    times["per_token_ms"] = 1000 * times["generate_s"] / n
    times["static_per_token_ms"] = 1000 * times["static_decode_s"] / n
    return {"batch": batch, **times}


def stage_arms(
    tcfg: TranscriberConfig,
    model_path: str,
    feats: np.ndarray,
    compiled: bool,
    window,
    batches: list[int],
    timer: Timer,
    decoder: str = "generate",
    compile_decoder: bool = False,
) -> dict[str, Any]:
    """The full stage (features in, rows out) and the encoder alone, at each batch, for one encoder (eager or
    compiled), one window (30 s, or ``auto``: 5 s clips in a 10 s window) and one decoder loop (``generate``
    or the static-cache one, its step eager or compiled).  Building the stage includes the compiled
    warm-ups, reported as ``start_s``."""
    import torch

    from pipeline.engines.windows import frames

    cfg = tcfg.model_copy(
        update={"compile_encoder": compiled, "window": window, "decoder": decoder, "compile_decoder": compile_decoder}
    )
    t0 = time.perf_counter()
    transcriber = HFWhisperTranscriber(cfg, model_path)
    engine = transcriber.engine
    out: dict[str, Any] = {
        "start_s": time.perf_counter() - t0,
        "compiled": engine.compiled,
        "decoder": decoder,
        "decoder_compiled": bool(engine.static and engine.static.compiled),
    }
    n_frames = transcriber.buckets([5.0])[0][1]
    out["window_frames"] = n_frames
    for b in batches:
        r = transcriber_rate(transcriber, feats, b, timer)
        x = torch.from_numpy(np.ascontiguousarray(feats[np.arange(b) % feats.shape[0], :, :n_frames]))
        x = x.to(transcriber.engine.device, transcriber.engine.dtype)
        with torch.inference_mode():
            transcriber.engine.encode(x)
            enc_s = timer(lambda x=x: transcriber.engine.encode(x), reps=3)
        r["encoder_alone_clips_per_s"] = b / enc_s
        out[f"batch_{b}"] = r
    assert n_frames <= frames(30.0)
    out["decoder_compiled"] = bool(engine.static and engine.static.compiled)  # still, after the batches
    return out


def features_rate(model_path: str, arrs: list[np.ndarray], batch: int, device: str, timer: Timer) -> dict[str, Any]:
    """Log-mel features for ``arrs``: the shipped CPU stage, or the same extractor's torch path on ``device``."""
    feats_stage = WhisperFeatures(TranscriberConfig(), model_path)
    groups = [arrs[i : i + batch] for i in range(0, len(arrs), batch)]
    if device == "cpu-stage":
        tables = [audio_batch(g) for g in groups]
        feats_stage(tables[0])
        s = timer(lambda: [feats_stage(t) for t in tables])
    else:
        fe = feats_stage.feature_extractor
        fe(groups[0], sampling_rate=SAMPLE_RATE, return_tensors="pt", device=device)
        s = timer(lambda: [fe(g, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=device) for g in groups])
    return {"where": device, "batch": batch, "clips": len(arrs), "clips_per_s": len(arrs) / s}


def serial_pipeline(
    model_path: str,
    transcriber: HFWhisperTranscriber,
    arrs: list[np.ndarray],
    batch: int,
    gpu_features: bool,
    timer: Timer,
) -> dict[str, Any]:
    """Features then generate, batch after batch in one process: what one GPU actor does if it makes its own."""
    feats_stage = WhisperFeatures(TranscriberConfig(), model_path)
    fe = feats_stage.feature_extractor
    device = transcriber.engine.device

    def one(group: list[np.ndarray]) -> None:
        if gpu_features:
            x = fe(group, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=device).input_features
            transcriber(with_features(x.float().cpu().numpy()))
        else:
            x = fe(group, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
            transcriber(with_features(x))

    groups = [arrs[i : i + batch] for i in range(0, len(arrs), batch)]
    one(groups[0])
    s = timer(lambda: [one(g) for g in groups])
    return {"features_on": "gpu" if gpu_features else "cpu", "batch": batch, "clips_per_s": len(arrs) / s}


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_mem_gib=props.total_memory / 2**30, sms=props.multi_processor_count)
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="a tiny random model: checks the script, measures nothing")
    p.add_argument("--tokens", type=int, default=32, help="tokens decoded per clip (a Common Voice sentence is ~20-30)")
    p.add_argument("--clips", type=int, default=128, help="clips per arm (at least 4 batches)")
    p.add_argument("--batches", default="2,16,32,64", help="transcriber batch sizes; 2 is the seed's, 16 the profile's")
    p.add_argument("--stage-batches", default="64,128,256", help="batches of the eager/compiled x 30/auto arms")
    p.add_argument("--out", type=Path, default=None, help="JSON results file (default bench/results/gpu-check-*.json)")
    args = p.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --tiny to check the script)", file=sys.stderr)
        return 2
    out = args.out or RESULTS / f"gpu-check-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = "float16" if args.device == "cuda" else "float32"
    cluster = build_config(profile="cluster").transcriber
    tcfg = cluster.model_copy(
        update={
            "max_new_tokens": args.tokens,
            "dtype": dtype,
            "num_gpus_per_actor": 1.0 if args.device == "cuda" else 0.0,
            # The arms before the stage arms measure today's stage as it was: eager, 30 s.
            "compile_encoder": False,
        }
    )
    result: dict[str, Any] = {
        "what": "Whisper large-v3-turbo architecture, random weights, fixed decode length",
        "tiny": args.tiny,
        "tokens_per_clip": args.tokens,
        "clip_seconds": 5.0,
        "cluster_batch": cluster.batch_size,
        "cluster_feature_batch": cluster.feature_batch_size,
        "env": environment(args.device),
        "arms": {},
    }

    def save() -> None:
        out.write_text(json.dumps(result, indent=2))

    def arm(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            value = fn()
            result["arms"][name] = value
            print(f"{name}: {json.dumps(value)} ({time.perf_counter() - t0:.1f} s)", flush=True)
            return value
        except Exception as exc:  # a failed arm is recorded and the others still run
            result["arms"][name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            print(f"{name}: FAILED {exc}", flush=True)
            return None
        finally:
            save()

    timer = Timer(args.device)
    arm("matmul_ceiling", lambda: matmul_ceiling(args.device, dtype, 512 if args.tiny else 8192))
    with tempfile.TemporaryDirectory() as tmp:
        model_path = str(Path(tmp) / "whisper")
        arch = TINY if args.tiny else LARGE_V3_TURBO
        built = arm("build", lambda: build_model(Path(model_path), arch, args.tokens, dtype))
        if built is None:
            return 1
        transcriber = HFWhisperTranscriber(tcfg, model_path)
        arrs = clips(args.clips)
        feats = (
            WhisperFeatures(tcfg, model_path)
            .feature_extractor(arrs, sampling_rate=SAMPLE_RATE, return_tensors="np")
            .input_features
        )

        def check_length() -> dict[str, Any]:
            import torch

            x = torch.from_numpy(feats[:2]).to(transcriber.engine.device, transcriber.engine.dtype)
            with torch.inference_mode():
                text = transcriber.engine.generate(transcriber.engine.model.get_encoder()(x), ["en", "en"])
            return {"text_tokens": int(text.shape[1])}

        arm("decode_length", check_length)
        flops = arm("flops", lambda: {"per_clip": flops_per_clip(transcriber, with_features(feats[:2]))})
        ceiling = result["arms"].get("matmul_ceiling", {}).get("tflops")
        for b in (int(x) for x in args.batches.split(",")):
            r = arm(f"transcriber_batch_{b}", lambda b=b: transcriber_rate(transcriber, feats, b, timer))
            if r and flops and ceiling:
                r["flop_ceiling_clips_per_s"] = ceiling * 1e12 / flops["per_clip"]
                r["share_of_ceiling"] = r["clips_per_s"] / r["flop_ceiling_clips_per_s"]
                save()
        for b in (cluster.batch_size, 64):
            arm(f"decode_breakdown_{b}", lambda b=b: decode_breakdown(transcriber, feats, b, timer))
        stage_batches = [int(x) for x in args.stage_batches.split(",")]
        for compiled in (False, True):
            for window in (30, "auto"):
                name = f"stage_{'compiled' if compiled else 'eager'}_{window}"
                arm(name, lambda c=compiled, w=window: stage_arms(tcfg, model_path, feats, c, w, stage_batches, timer))
        # The static-cache decoder loop (pipeline/engines/static_decoder.py), on the compiled encoder.
        for window, compile_decoder in ((30, False), (30, True), ("auto", True)):
            name = f"stage_compiled_{window}_static{'_compiled' if compile_decoder else ''}"
            arm(
                name,
                lambda w=window, cd=compile_decoder: stage_arms(
                    tcfg, model_path, feats, True, w, stage_batches, timer, decoder="static", compile_decoder=cd
                ),
            )
        fb = cluster.feature_batch_size
        arm("features_cpu_stage", lambda: features_rate(model_path, arrs, fb, "cpu-stage", timer))
        if args.device == "cuda":
            arm("features_gpu", lambda: features_rate(model_path, arrs, fb, "cuda", timer))
        for gpu_feats in (False, True) if args.device == "cuda" else (False,):
            name = f"serial_features_{'gpu' if gpu_feats else 'cpu'}"
            arm(name, lambda g=gpu_feats: serial_pipeline(model_path, transcriber, arrs, cluster.batch_size, g, timer))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

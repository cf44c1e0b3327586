"""What a clip is called in an export: one name per id, never two ids under one, read back by WebDataset."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipeline.table.export_formats import name_clash, sample_key, write_nemo, write_webdataset
from pipeline.table.workspace import Workspace
from tests.conftest import encode, tone

# Ids a Parquet input may carry: dots (WebDataset's key ends at the first), a space and its underscore twin,
# a slash, non-ASCII, and one too long for a file name; and a release's own clip names.
IDS = [
    "spk1.utt1",
    "spk1.utt2",
    "a b",
    "a_b",
    "a/b",
    "clip ñ",
    "x" * 300,
    "x" * 299 + "y",
    "common_voice_en_1.mp3",
    "common_voice_en_2.MP3",
    "6ec0dea69fdbcc33",
]


def _rows(ids: list[str]) -> pa.Table:
    audio = encode(tone(0.2), 16_000)
    return pa.table({"id": ids, "audio_bytes": pa.array([audio] * len(ids), pa.binary())})


def test_every_id_gets_its_own_key_without_dots():
    keys = [sample_key(i) for i in IDS]
    assert len(set(keys)) == len(IDS)
    assert not any("." in k or "/" in k for k in keys)
    assert all(len(k) <= 200 for k in keys)
    # A release's clip is named as Common Voice names it, less the extension; a plain id is itself.
    assert keys[IDS.index("common_voice_en_1.mp3")] == "common_voice_en_1"
    assert keys[IDS.index("6ec0dea69fdbcc33")] == "6ec0dea69fdbcc33"
    assert sample_key("spk1.utt1") == "spk1%2Eutt1" and sample_key("clip ñ") == "clip%20%C3%B1"


def test_webdataset_reads_one_sample_per_id(tmp_path):
    wds = pytest.importorskip("webdataset")
    assert write_webdataset(tmp_path, iter([_rows(IDS)])) == len(IDS)
    samples = list(wds.WebDataset([str(p) for p in sorted(tmp_path.glob("*.tar"))], shardshuffle=False))
    # Before: "spk1.utt1" and "spk1.utt2" were both sample "spk1", and webdataset refused the shard.
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(IDS)
    assert len({s["__key__"] for s in samples}) == len(IDS) and all("flac" in s for s in samples)


def test_nemo_writes_one_file_per_id(tmp_path):
    assert write_nemo(tmp_path, iter([_rows(IDS)]), False, tmp_path) == len(IDS)
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    paths = [x["audio_filepath"] for x in lines]
    assert len(set(paths)) == len(IDS) and len(list((tmp_path / "audio").iterdir())) == len(IDS)
    assert all((tmp_path / p).parent == tmp_path / "audio" for p in paths)


def test_an_id_beside_its_release_form_is_a_clash_found_before_writing():
    with Workspace() as ws:
        ws.put("ok", pa.table({"id": IDS}))
        assert name_clash(ws, "ok") is None
        ws.put("clashing", pa.table({"id": [*IDS, "common_voice_en_1"]}))
        assert name_clash(ws, "clashing") == ("common_voice_en_1.mp3", "common_voice_en_1")

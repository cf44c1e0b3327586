"""What a person sees: stage lines with progress, and the closing summary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.show.console import console_summary
from pipeline.show.progress import ConsoleProgress, stage_line, track


def test_stage_lines_say_done_rate_and_eta():
    assert stage_line("decode", 12, 40, 8.0).split() == [
        "decode",
        "12/40",
        "███████░░░░░░░░░░░░░░░░░",
        "8.0",
        "rows/s",
        "ETA",
        "0:03",
    ]
    assert stage_line("judge", 0, 40, None).endswith("starting")
    assert stage_line("judge", 40, 40, 2.0).endswith("done")


def test_a_stage_is_never_due_before_the_stage_feeding_it():
    """Seen on a 5,000-clip release: decode "ETA 7:55" above judge "ETA 4:57", though the judge can only
    finish after decode's last row."""
    import io
    import time

    p = ConsoleProgress(None, ["decode", "judge", "gates"], total=1000, out=io.StringIO(), tty=False)
    now = time.time()
    # decode has read 100 rows at 1 row/s; the judge took its last 50 at 10 rows/s; the gates are done.
    p._first = {"decode": (now - 100, 0), "judge": (now - 5, 50), "gates": (now - 5, 50)}
    decode, judge, gates = p._lines({"decode": 100, "judge": 100, "gates": 100})
    assert decode.endswith("ETA 15:00") and judge.endswith("ETA 15:00") and gates.endswith("ETA 15:00")
    assert "10.0 rows/s" in judge  # its own rate still shows
    assert stage_line("judge", 100, 1000, 10.0).endswith("ETA 1:30")


def test_without_a_counter_a_stage_runs_untouched():
    def stage(batch):
        return batch

    assert track(stage, "decode", None) is stage


def test_a_tracked_class_keeps_its_name_for_ray_datas_operator_names():
    class FasterWhisperTranscriber:
        def __call__(self, batch):
            return batch

    tracked = track(FasterWhisperTranscriber, "transcribe", "no-such-actor")
    assert tracked.__name__ == "FasterWhisperTranscriber"
    assert tracked()([1, 2, 3]) == [1, 2, 3]  # reporting is best effort: no actor, no failure


def test_lines_without_a_terminal_are_periodic_and_timestamped():
    import io

    class Counter:
        class snapshot:
            @staticmethod
            def remote():
                return None

    out = io.StringIO()
    p = ConsoleProgress(Counter(), ["decode", "transcribe", "gates"], total=10, out=out, tty=False)
    p._draw({"decode": 4})
    p._draw({"decode": 4})  # unchanged: nothing new printed
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[0:00] decode") and "4/10" in lines[0]
    assert "\\x1b" not in out.getvalue()


def test_summary_names_the_table_what_changed_and_how_to_open_it():
    from tests.unit.test_report import _result

    result = _result("r1", 6, {"wer_above": 2, "too_short": 1})
    result.locales[0].changes = {"engine_rows": 10, "added": 10, "redecided": 0}
    result.locales[0].table_rows, result.locales[0].table_kept = 10, 6
    text = console_summary(result, log="/out/_logs/x.log")
    assert "curate.en_clips  (snapshot 42, tag nightly-2026-12-01)" in text
    assert "10 clip(s) through the engines; 10 added" in text
    assert "kept         6 (60%)" in text and "    wer_above  2" in text
    assert "    at read    1  clip missing from release (1)" in text  # why, not only where
    assert "table now    10 clips, 6 kept" in text and "log        /out/_logs/x.log" in text
    assert "curate query --output /out --locale en" in text and "--format hf --to /out-hf" in text
    result.locales[0].nothing_to_do = True
    assert "every input is already applied" in console_summary(result)


def test_a_failure_names_the_stage_and_the_engines_own_cause(tmp_path):
    from pipeline.show.console import explain_failure

    log = tmp_path / "run.log"
    log.write_text(
        "INFO something\n"
        "(EngineCore pid=1) ERROR [core.py:1510] ValueError: Available memory on node 0 is less than requested\n"
        "RuntimeError: Engine core initialization failed. See root cause above.\n"
    )
    exc = RuntimeError("The actor died ... ray::MapWorker(MapBatches(vLLMEngineStageUDF)).__init__()")
    text = explain_failure(exc, log)
    assert text.startswith("curate: failed: the judge stage failed")
    assert "root cause: ValueError: Available memory on node 0" in text
    stalled = explain_failure(RuntimeError("ExecutionTimeoutError: no progress for 40 s"), None, "judge")
    assert "the judge stage never got going" in stalled


def test_the_log_moves_under_a_local_output_with_a_name_of_its_own(tmp_path):
    """Two runs that end in the same second (shards of one night) keep two logs; an output that is not a
    folder leaves the log where it was, and the console says that path."""
    import io
    import tempfile

    from pipeline.show.console import Console

    out = tmp_path / "out"
    out.mkdir()
    kept = []
    for text in ("first", "second"):
        fd, path = tempfile.mkstemp(prefix="curate-run-", suffix=".log", dir=tmp_path)
        os.write(fd, text.encode())
        os.close(fd)
        console = Console(io.StringIO(), io.StringIO(), Path(path))
        kept.append(console.keep_log(str(out)))
        assert console.keep_log(str(out)) == kept[-1]  # asked again (a failure after the summary): same
        assert not Path(path).exists()
    assert len(set(kept)) == 2 and sorted(Path(k).read_text() for k in kept) == ["first", "second"]
    assert all(Path(k).parent == out / "_logs" for k in kept)
    stray = tmp_path / "curate-run-x.log"
    stray.write_text("x")
    assert Console(io.StringIO(), io.StringIO(), stray).keep_log(str(tmp_path / "missing")) == str(stray)


def test_the_root_cause_comes_from_the_failed_stages_own_process(tmp_path):
    """Under load a Ray GCS line ("RpcError: Socket closed") can come first in the log; the judge's
    engine's own error, 118 lines later in the CI run that found this, is the cause."""
    from pipeline.show.console import explain_failure, root_cause

    log = tmp_path / "run.log"
    noise = [f"(ReadFiles pid=10) reading block {i}\n" for i in range(118)]
    log.write_text(
        "[2026-11-26 10:00:01,000 E 4242 4243] core_worker.cc:123: RpcError: RPC error: Socket closed\n"
        + "".join(noise)
        + "\x1b[36m(MapWorker(MapBatches(vLLMEngineStageUDF)) pid=23330)\x1b[0m ValueError: Available memory on "
        "node 127.0.0.1 is too low for the KV cache\n"
    )
    assert root_cause(log, "judge").startswith("ValueError: Available memory on node")
    assert root_cause(log).startswith("RpcError")  # no stage known: the first specific error
    text = explain_failure(RuntimeError("vLLMEngineStageUDF failed: Engine core initialization failed"), log)
    assert "the judge stage failed" in text and "root cause: ValueError: Available memory" in text


def test_each_stage_counts_itself_rows_in_and_out_its_quarantine_and_seconds(monkeypatch):
    """Per-stage counters come from the stage's own batches (datatrove's stat_update), never from the rows
    afterwards: a batch's rows in and out, the rows this stage quarantined (not an earlier stage's)."""
    import pyarrow as pa

    from pipeline.result import LocaleResult, add_stats
    from pipeline.show import progress
    from pipeline.show.report import RunReport, summary_markdown

    seen = []
    monkeypatch.setattr(progress, "_report", lambda *a: seen.append(a))

    def decode(batch):
        stage = ["decode" if i == 1 else s for i, s in enumerate(batch.column("stage").to_pylist())]
        return batch.set_column(batch.schema.get_field_index("stage"), "stage", pa.array(stage, pa.string()))

    batch = pa.table({"id": ["a", "b", "c"], "stage": [None, None, "read"]})
    out = progress.track(decode, "decode", "counter")(batch)
    ((name, stage, got_in, got_out, seconds),) = seen
    assert (name, stage, got_in.num_rows, got_out.num_rows) == ("counter", "decode", 3, 3) and seconds >= 0
    assert progress._quarantined_by(out, "decode") == 1  # "read" failed the third row, not decode

    totals: dict = {}
    add_stats(totals, "decode", **{"in": 3, "out": 3, "quarantined": 1, "seconds": 0.5})
    add_stats(totals, "decode", **{"in": 2, "out": 2, "quarantined": 0, "seconds": 0.25})
    assert totals == {"decode": {"in": 5, "out": 5, "quarantined": 1, "seconds": 0.75}}
    # Shown as counted, summed over locales and shards.
    loc = LocaleResult(locale="en", table="t", audio_table="a", stages=totals)
    run = RunReport(shards=2, tally=loc.tally, locales=[loc, loc], models={}, config={})
    assert "| decode | 10 | 10 | 2 | 1.5 |" in summary_markdown(run, 1.0, "x", "/out")


@pytest.mark.parametrize(
    "output", ["/data/out ü", "/data/it's out", "s3://bucket/team data/curated", "file:///data/out"]
)
def test_the_summary_open_lines_paste_into_a_shell_as_they_read(output):
    """Each line, split as a POSIX shell splits it, gives the command the right output path, and its
    ``python -c`` reads the folder the export wrote; an s3:// output's export goes to a local folder."""
    import ast
    import shlex

    from pipeline.show.console import open_lines
    from tests.unit.test_report import _result

    result = _result("r1", 6, {})
    result.output = output
    query, hf = (line.split(":", 1)[1] for line in open_lines(result, "curate.en_clips"))
    argv = shlex.split(query)
    assert argv[:4] == ["curate", "query", "--output", output] and argv[-1].startswith("select id")
    export, load = (shlex.split(part) for part in hf.split(" && "))
    to = export[export.index("--to") + 1]
    assert export[export.index("--output") + 1] == output and "://" not in to
    local = output.removeprefix("file://")  # a file:// output is a local folder: its export goes beside it
    assert to == (f"{local}-hf" if "://" not in local else "curated-hf")
    assert load[:2] == ["python", "-c"]
    call = ast.parse(load[2]).body[1].value.args[0]  # print(datasets.load_dataset("parquet", data_dir=...))
    assert ast.literal_eval(call.keywords[0].value) == to


def test_a_stage_that_fails_while_the_dag_is_built_is_named_not_the_stage_the_lines_wait_on(tmp_path):
    """The cluster profile offline: the judge's chat template loads its tokenizer on the driver while the
    DAG is built, and the hub cannot be reached.  Every progress line still said "starting", and the
    message blamed the first of them: "the decode stage failed"."""
    from pipeline.dag import apply_stages
    from pipeline.show.console import explain_failure
    from pipeline.stage import Stage

    def offline(ds):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    stages = [Stage("decode", reads=(), call=lambda b: b), Stage("judge", reads=(), build=offline)]
    log = tmp_path / "run.log"
    log.write_text("httpcore2.ConnectError: [Errno -2] Name or service not known\n")

    class Plan:  # apply_stages hands each stage the dataset so far; decode's map needs one
        def map_batches(self, *a, **k):
            return self

    with pytest.raises(OSError) as caught:
        apply_stages(Plan(), stages)
    text = explain_failure(caught.value, log, "decode")
    assert text.startswith("curate: failed: setting up the judge stage failed, on this machine")
    assert "huggingface.co" in text and "root cause: ConnectError" in text


def test_the_start_line_names_the_locale_s_sources_that_fit_and_counts_the_rest():
    from pipeline.show.progress import start_line

    folder = [f"/data/cv-corpus-23.0-2025-09-05/{loc}" for loc in ("de", "es", "fr")]
    given = {"inputs": folder, "releases": [{"uri": u, "locale": u[-2:]} for u in folder]}
    # A folder of several locales: each locale's line named every locale's folder, cut at 100 characters.
    assert start_line(20, given, "es", "curate.es_clips") == f"curating 20 clips from {folder[1]} into curate.es_clips"
    many = [f"/data/cv-corpus-{v}.0-2025-09-05-de.tar.gz" for v in range(17, 24)]
    line = start_line(5, {"inputs": many, "releases": [{"uri": u, "locale": "de"} for u in many]}, "de", "t")
    assert line == f"curating 5 clips from {many[0]}, {many[1]} and 5 more into t"  # whole names only
    parquet = ["/" + "x" * 150, "/data/b.parquet"]
    assert start_line(1, {"inputs": parquet}, "en", "t") == f"curating 1 clips from {parquet[0]} and 1 more into t"


def test_a_run_that_changed_nothing_says_whether_its_list_held_any_clip():
    """``--split other`` on a delta whose other.tsv is a header alone said "every clip the inputs list is
    already up to date" of a table that had none."""
    from types import SimpleNamespace

    from pipeline.run.locale import unchanged_why

    def ctx(listed, shard=(0, 1)):
        return SimpleNamespace(inputs=SimpleNamespace(curated_list=listed), shard=shard)

    assert unchanged_why(ctx("other"), {"selected": 0}) == "other.tsv lists no clip to curate"
    assert (
        unchanged_why(ctx("validated", (2, 4)), {"selected": 0}) == "validated.tsv lists no clip to curate in shard 3/4"
    )
    assert unchanged_why(ctx(None), {"selected": 0}) == "the input lists no clip to curate"
    assert unchanged_why(ctx("validated"), {"selected": 7}) == "every clip the inputs list is already up to date"

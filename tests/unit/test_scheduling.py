"""The order ``make test`` hands modules to its workers (tests/scheduling.py): pure."""

from __future__ import annotations

from tests.scheduling import GUESS, guess, load_seconds, module_order, write_seconds


def test_longest_module_first_and_every_module_once():
    markers = {"a": {"slow"}, "b": set(), "c": {"slow"}, "d": {"process"}}
    seconds = {"a": 100, "b": 1, "c": 300, "d": 20}
    assert module_order(markers, seconds) == ["c", "a", "d", "b"]


def test_a_module_the_file_does_not_know_is_placed_by_its_markers():
    markers = {"unit": set(), "new_engine": {"slow", "process"}, "cli": {"process"}, "known": {"slow"}}
    order = module_order(markers, {"known": GUESS["slow"] - 1, "unit": 5})
    assert order == ["new_engine", "known", "cli", "unit"]
    assert guess({"slow", "judge"}) == GUESS["judge"]


def test_two_judge_modules_are_never_next_to_each_other_while_others_are_left():
    markers = {"j1": {"judge"}, "j2": {"judge"}, "j3": {"judge"}, "o1": {"slow"}, "o2": set()}
    seconds = {"j1": 300, "j2": 290, "j3": 280, "o1": 100, "o2": 1}
    order = module_order(markers, seconds)
    assert order == ["j1", "o1", "j2", "o2", "j3"]
    # Once only judge modules are left, they still all run.
    assert module_order({"j1": {"judge"}, "j2": {"judge"}}, {}) == ["j1", "j2"]


def test_the_seconds_file_round_trips_and_a_broken_one_orders_by_markers(tmp_path):
    path = tmp_path / "seconds.json"
    write_seconds({"b": 1.4, "a": 99.6}, path)
    assert load_seconds(path) == {"a": 100.0, "b": 1.0}
    assert list(load_seconds(path)) == ["a", "b"]  # written longest first, to read
    path.write_text("[1, 2")
    assert load_seconds(path) == {}
    assert load_seconds(tmp_path / "missing.json") == {}


def test_the_committed_file_names_only_modules_that_exist():
    from tests.scheduling import SECONDS_FILE

    root = SECONDS_FILE.parents[1]
    seconds = load_seconds()
    assert seconds, "tests/module_seconds.json is missing or broken"
    assert [m for m in seconds if not (root / m).is_file()] == []

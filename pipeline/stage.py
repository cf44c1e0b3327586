"""One step of the DAG as one small object: its name, its columns, where it runs, and its call.

Each stage's file builds its own ``Stage`` from the config (``decode.stage(cfg)``), ``dag.py`` only
lists them, ``check_stages`` walks the same objects' columns when the DAG is built, and ``apply`` adds
a stage to a Dataset with the resources it declares.  The name is the one a person meets everywhere:
in a contract error, in ``stage`` of a row it quarantined, on the progress line, in a failed run's
"the <name> stage failed".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.data import Dataset

# The reader and the writer sit at the DAG's two ends, outside its list; these are their names.
READ = "read"
WRITE = "write"


class ColumnContractError(ValueError):
    """A stage reads a column that no earlier stage (or the input) provides, or would lose one."""


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    # A projection: only these columns (and ``writes``) come out.  Every other column the stage is
    # given must be dropped earlier, by name, or the check fails: nothing vanishes unannounced.
    keeps: tuple[str, ...] | None = None
    # fn(batch) -> batch, run as Ray tasks; or a class, run as an actor pool whose actors each call
    # ``call(*setup)`` once (models load there) and then ``__call__(batch)``.
    call: Callable[..., Any] | None = None
    setup: tuple[Any, ...] = ()
    batch_size: int | None = None
    actors: int = 1  # the pool's size, for a class
    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: dict[str, float] | None = None
    counted: bool = False  # its output rows are shown as a progress line under ``name`` (every stage is counted)
    # A stage that is a small DAG of its own (ray.data.llm's processor): ``build(ds)`` adds it whole.
    build: Callable[[Dataset], Dataset] | None = None

    def apply(self, ds: Dataset, progress: str | None = None) -> Dataset:
        """``ds`` with this stage added; ``progress`` names the counter actor its counts go to (rows in and
        out, quarantined, seconds: the stage counts itself, the run never rebuilds that from the rows)."""
        from pipeline.show.progress import track

        if self.build is not None:
            ds = self.build(ds)
            if progress:
                # Counted after its last step (fused into it by Ray Data: no extra hop); its own seconds
                # are spread over its engine's steps, so none are claimed here.
                ds = ds.map_batches(track(_rows_out, self.name, progress, timed=False), batch_format="pyarrow")
            return ds
        if self.call is None:
            raise TypeError(f"stage {self.name} has a contract but nothing to run")

        udf = track(self.call, self.name, progress)
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "batch_format": "pyarrow"}
        if isinstance(self.call, type):
            from ray.data import ActorPoolStrategy

            kwargs.update(fn_constructor_args=self.setup, compute=ActorPoolStrategy(size=self.actors))
        # 0 is a request too (an actor on a node with no CPUs for anything else): only None is "unset".
        for key in ("num_cpus", "num_gpus"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.resources:
            kwargs["resources"] = self.resources
        return ds.map_batches(udf, **kwargs)


def _rows_out(batch: Any) -> Any:
    return batch


def check_stages(input_columns: Iterable[str], stages: Iterable[Stage]) -> set[str]:
    """The columns after ``stages`` run on ``input_columns``; ``ColumnContractError`` on a gap."""
    have = set(input_columns)
    for stage in stages:
        missing = [c for c in stage.reads if c not in have]
        if missing:
            raise ColumnContractError(
                f"{stage.name} reads {missing}, which no earlier stage writes (have {sorted(have)})"
            )
        if stage.keeps is not None:
            lost = have - set(stage.keeps) - set(stage.writes) - set(stage.drops)
            if lost:
                raise ColumnContractError(
                    f"{stage.name} keeps only its declared columns, so {sorted(lost)} would vanish here: "
                    "add them to what it keeps, or drop them by name in an earlier stage"
                )
            have &= set(stage.keeps)
        have = (have | set(stage.writes)) - set(stage.drops)
    return have

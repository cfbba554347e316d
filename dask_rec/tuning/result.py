"""The result of :func:`dask_rec.tune`: the trials, the best config, a table, JSON and a plot."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TuneResult", "config_file_dict", "write_json_atomically"]


@dataclass
class TuneResult:
    """What a tuning run tried and found.

    Attributes
    ----------
    model, metric, search : str
    trials : list of dict
        One per finished trial, in the order they finished: ``params``, ``value`` (the metric),
        ``metrics`` (all cut-offs), ``fit_seconds``, ``seconds``, ``stage_seconds``.
    base_config : config
        The config the trials' parameters replace fields of.
    info : dict
        Sizes of the split, ``gramian_seconds`` (once, when shared), ``concurrency``, ``seconds``.
    """

    model: str
    metric: str
    search: str
    trials: list
    base_config: object
    info: dict = field(default_factory=dict)

    @property
    def best(self) -> dict:
        """The trial with the highest metric (the first such in the order of :meth:`ordered_trials`)."""
        if not self.trials:
            raise ValueError("no trial finished")
        return max(self.ordered_trials(), key=lambda t: t["value"])

    @property
    def best_params(self) -> dict:
        return dict(self.best["params"])

    @property
    def best_config(self):
        """The model config of the best trial."""
        from dask_rec.tuning.space import config_for, tunable

        return config_for(tunable(self.model), self.base_config, self.best["params"])

    def ordered_trials(self) -> list:
        """The trials sorted by their parameters (a fixed order, whatever order they finished in)."""
        return sorted(self.trials, key=lambda t: [_sort_key(v) for v in t["params"].values()])

    def to_dict(self) -> dict:
        """JSON-able: the trials (in parameter order), the best trial and its config."""
        return {"model": self.model, "metric": self.metric, "search": self.search, **self.info,
                "best": self.best, "best_config": config_file_dict(self.model, self.best_config),
                "trials": self.ordered_trials()}

    def table(self) -> str:
        """One row per trial: its parameters, the metrics and seconds; the best marked ``*``."""
        trials = self.ordered_trials()
        if not trials:
            return "no trial finished"
        names = list(trials[0]["params"])
        keys = [k for k in trials[0]["metrics"] if "@" in k and not k.startswith("coverage")]
        header = [*names, *keys, "fit s"]
        rows = [[_fmt(t["params"][n]) for n in names] + [f"{t['metrics'][k]:.4f}" for k in keys]
                + [f"{t['fit_seconds']:.1f}"] for t in trials]
        best = trials.index(self.best)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = [f"{self.model}: {len(trials)} trials ({self.search}), {self.metric} on "
                 f"{self.info.get('n_validation_users')} validation users",
                 "  " + "  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += [("* " if i == best else "  ") + "  ".join(c.rjust(w) for c, w in zip(r, widths))
                  for i, r in enumerate(rows)]
        lines.append(f"best: {self.best_params} -> {self.metric} {self.best['value']:.4f}")
        return "\n".join(lines)

    def plot(self, path, x: str | None = None, line: str | None = None) -> str:
        """A PNG of the metric against ``x`` (default: the density or budget, else the first
        parameter), one line per value of ``line`` (default: λ, else the second parameter)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.trials[0]["params"]) if self.trials else []
        if not names:
            raise ValueError("no trial finished: nothing to plot")
        x = x or next((n for n in ("density", "nnz_per_item") if n in names), names[0])
        line = line or next((n for n in ("l2",) if n in names and n != x), next((n for n in names if n != x), None))
        groups: dict = {}
        for t in self.ordered_trials():
            groups.setdefault(t["params"].get(line) if line else None, []).append((t["params"][x], t["value"]))
        fig, ax = plt.subplots(figsize=(6, 4))
        for value, points in groups.items():
            points.sort(key=lambda p: _sort_key(p[0]))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    label=f"{line}={_fmt(value)}" if line else None)
        if all(isinstance(t["params"][x], (int, float)) and t["params"][x] > 0 for t in self.trials):
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(self.metric)
        ax.set_title(f"{self.model}: {self.metric} on validation users")
        if line:
            ax.legend()
        fig.tight_layout()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        return str(path)


def config_file_dict(model: str, config) -> dict:
    """What ``dask-rec fit --config`` reads: SANSA's :func:`~dask_rec.config.config_to_dict`, or
    ``{"model": name, "config": {...}}`` for the other models."""
    from dask_rec.config import SANSAConfig, config_to_dict

    if isinstance(config, SANSAConfig):
        return config_to_dict(config)
    return {"model": model, "config": dataclasses.asdict(config)}


def write_json_atomically(data: dict, path) -> str:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and value is not None else (1, 0, str(value))


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)

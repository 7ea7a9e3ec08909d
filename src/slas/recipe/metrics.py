"""The metrics log of a run: ``MetricsLog`` writes ``metrics.jsonl`` (one JSON object per logged iteration, plus
TensorBoard / W&B when configured), ``read_metrics`` is the one reader (the recipe, ``slas compare``, ``slas report``,
benchmarks/ and research/ use it), ``last_iteration`` reads only the end of the file (polling a long run),
``series`` / ``first_value`` / ``last_value`` / ``best_value`` pick one metric out of the rows, and
``metrics_figure`` draws ``curves.png``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from slas.config import Config, ConfigError
from slas.recipe.checkpoint import RunFailure
from slas.recipe.run_dir import RunDir


def _append(path: Path, data: bytes) -> int:
    """Append ``data`` whole or not at all: a write that fails part-way (a full disk) is cut back off, so the file
    never keeps a partial line. Unbuffered, so that nothing is left in a buffer to be flushed after the cut. Returns
    the offset ``data`` starts at."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
    return start


def _replace(path: Path, text: str) -> None:
    """Write ``path`` atomically (a temporary file, then a rename): a failure leaves the old file as it was."""
    tmp = path.with_name(f".tmp_{path.name}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunFailure(f"{path}: could not be rewritten ({e.strerror or e}); it is as it was") from e


class MetricsLog:
    """``metrics.jsonl`` (always) plus TensorBoard / W&B when configured. Ranks other than 0 (``main`` False)
    keep their rows in memory and write nothing."""

    def __init__(self, run_dir: Path, cfg: Config, keep_upto: int | None, main: bool = True, warn=print):
        run = RunDir(run_dir)
        self.path = run.metrics
        self.main, self.rows = main, []
        self.tb = self.wandb = None
        self._last_at: int | None = None  # byte offset of the last row written by this process (``amend``)
        if not main:
            return
        if keep_upto is None:
            self.path.write_text("")
        else:  # resume: drop rows written after the checkpoint we resume from, and rows cut short by a crash
            bad: list[int] = []
            self.rows = [r for r in read_metrics(run.root, bad) if r["iteration"] <= keep_upto]
            if bad:
                warn(f"warning: {self.path}: dropped unreadable line(s) {', '.join(map(str, bad))} (a row cut short "
                     "when the run was killed, or a damaged file)")
            _replace(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard is on but tensorboard is not installed: "
                                  "pip install 'slas[tensorboard]'") from None
            self.tb = SummaryWriter(str(run.tensorboard))
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("run.wandb is on but wandb is not installed: pip install 'slas[wandb]'") from None
            self.wandb = wandb.init(dir=str(run_dir), mode=cfg.run.wandb_mode, config=cfg.to_dict(), resume="allow")

    def write(self, row: dict) -> None:
        if not self.main:
            self.rows.append(row)
            return
        try:
            self._last_at = _append(self.path, (json.dumps(row) + "\n").encode())
        except OSError as e:
            raise RunFailure(f"{self.path}: iteration {row['iteration']}'s row was not written ({e.strerror or e}); the "
                             "file keeps every earlier row whole") from e
        self.rows.append(row)
        self._loggers(row, row["iteration"])

    def amend(self, values: dict) -> None:
        """Add ``values`` to the last row this process wrote (run.log_memory: the peak memory of the checkpoint saved
        after the row); the file's last line is rewritten in place. A no-op for {}."""
        if not values or not self.rows:
            return
        self.rows[-1] = self.rows[-1] | values
        if not self.main or self._last_at is None:
            return
        with self.path.open("rb") as f:
            f.seek(self._last_at)
            old = f.read()
        os.truncate(self.path, self._last_at)
        try:
            _append(self.path, (json.dumps(self.rows[-1]) + "\n").encode())
        except OSError as e:
            _append(self.path, old)  # the row as it was: it fits where it was
            raise RunFailure(f"{self.path}: iteration {self.rows[-1]['iteration']}'s row could not take its "
                             f"checkpoint's memory ({e.strerror or e}); the file keeps every row whole") from e
        self._loggers(values, self.rows[-1]["iteration"])

    def _loggers(self, values: dict, step: int) -> None:
        """TensorBoard and W&B, when configured."""
        if self.tb is not None:
            for k, v in values.items():
                if k != "iteration":
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def plot(self, path: Path) -> None:
        if not self.main:
            return
        import matplotlib.pyplot as plt

        fig = metrics_figure(self.rows)
        fig.savefig(path, dpi=80)
        plt.close(fig)


# The proportions the ShapesWorld evaluation logs (fractions of images), each with the metric holding its n: their
# curves get a fixed [0, 1] axis and Wilson 95% bands, and training's final lines their n and intervals.
PROPORTION_N = {"eval/gold_accuracy": "eval/n_images", "eval/geneval_accuracy": "eval/n_images",
                "eval/exact_count": "eval/n_images", "eval/debris": "eval/n_images",
                "eval/id/gold_accuracy": "eval/id/n_images", "eval/id/exact_count": "eval/id/n_images",
                "eval/id/debris": "eval/id/n_images"}


def metrics_figure(rows: list[dict]):
    """The figure of ``curves.png``: one panel per group of logged metrics. Accuracy panels (``PROPORTION_N``) keep
    the y-axis at [0, 1], never zoomed, and shade the Wilson 95% interval of each point whose row logs its n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slas.evals.stats import wilson

    # (title, [(metric, line label)]): a panel draws each of its metrics that the run logged
    panels = [("train reward", [("train/reward_mean", None)]),
              ("strict gold accuracy", [("eval/gold_accuracy", "held-out (eval.split)"),
                                        ("eval/id/gold_accuracy", "in-domain (train prompts)")]),
              ("held-out GenEval rules", [("eval/geneval_accuracy", None)]),
              ("exact count", [("eval/exact_count", "held-out"), ("eval/id/exact_count", "in-domain")]),
              ("held-out reward (deterministic)", [("eval/reward_mean", None)])]
    panels = [(title, [(k, lab) for k, lab in lines if any(k in r for r in rows)]) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines] or [("no metrics yet", [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=False):
        banded = False
        for key, label in lines:
            pts = [(r["iteration"], r[key]) for r in rows if key in r]
            (line,) = ax.plot(*zip(*pts, strict=False), marker="o" if key.startswith("eval") else None, ms=3,
                              label=label)
            n_key = PROPORTION_N.get(key)
            band = [(r["iteration"], *wilson(r[key] * r[n_key], int(r[n_key]))) for r in rows
                    if n_key and key in r and r.get(n_key) and 0 <= r[key] <= 1]
            if band:
                xs, los, his = zip(*band, strict=True)
                ax.fill_between(xs, los, his, color=line.get_color(), alpha=0.2, linewidth=0)
                banded = True
        if lines and all(k in PROPORTION_N for k, _ in lines):
            ax.set_ylim(0.0, 1.0)  # an accuracy: the whole scale, so that noise never looks like a trend
            title += " (95% Wilson band)" if banded else ""
        if any(label for _, label in lines):
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def read_metrics(run_dir: str | Path, bad: list[int] | None = None) -> list[dict]:
    """The one reader of a run's ``metrics.jsonl``: its rows in iteration order ([] when there is none yet).
    Unreadable lines (a torn last line of a killed run) are skipped; their line numbers are appended to ``bad``."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # the loop writes NaN for a NaN reward; json reads it back
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            rows.append(row)
        elif bad is not None:
            bad.append(n)
    return sorted(rows, key=lambda r: r["iteration"])


def series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(iteration, value) of every row that logged a finite ``key``."""
    return [(r["iteration"], float(r[key])) for r in rows if key in r and math.isfinite(r[key])]


def first_value(rows: list[dict], key: str) -> float:
    """``key``'s first finite value in ``rows`` (NaN if none)."""
    s = series(rows, key)
    return s[0][1] if s else math.nan


def last_value(rows: list[dict], key: str) -> float:
    """``key``'s last finite value in ``rows`` (NaN if none)."""
    s = series(rows, key)
    return s[-1][1] if s else math.nan


def best_value(rows: list[dict], key: str) -> float:
    """``key``'s largest finite value in ``rows`` (NaN if none)."""
    s = series(rows, key)
    return max(v for _, v in s) if s else math.nan


def last_iteration(run_dir: str | Path) -> int | None:
    """The iteration of the last complete row of a run's metrics log (None before its first row): read from the
    file's end, so that polling a long run stays cheap."""
    try:
        with RunDir(run_dir).metrics.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written, or cut by the 64 KiB window
            continue
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            return row["iteration"]
    return None

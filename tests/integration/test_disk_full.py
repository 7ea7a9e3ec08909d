"""A full disk: a checkpoint save that runs out of space leaves the previous checkpoint intact and the run resumable,
prints one `error:` line and exits 1; metrics.jsonl never keeps a partial line; `--resume` after space is freed
continues exactly (docs/reliability.md).

Two ways to run out of space: a small tmpfs mounted for the test (root with CAP_SYS_ADMIN; the write fails with
ENOSPC, and remounting it larger frees the space), and a file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored, which
any user can set on a child process; the write fails with EFBIG). Each test runs under the tmpfs where it can be
mounted, and always under the file-size limit.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _toyruns import tiny_overrides
from slas.apps.cli import main
from slas.config import Config
from slas.recipe import checkpoint
from slas.recipe.checkpoint import RunFailure
from slas.recipe.metrics import MetricsLog, read_metrics

ITERS = 3
EXTRA = {"train.iterations": ITERS}


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _used(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Tmpfs:
    """A tmpfs of a given size mounted at ``path`` (skips the test where it cannot be mounted)."""

    def __init__(self, path: Path, size: int):
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                              text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the file-size "
                        "limit variant covers this case")
        self.path = path

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def _file_size_limit(limit: int):
    """The child's preexec: files may not grow beyond ``limit`` bytes, and a write past it fails with EFBIG instead
    of killing the process (SIGXFSZ)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _slas(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "slas", *argv], capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=_file_size_limit(limit))


@pytest.fixture(scope="module")
def reference(tiny_ckpt, tmp_path_factory):
    """The uninterrupted run of 3 iterations."""
    out = tmp_path_factory.mktemp("disk_ref") / "run"
    assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, out, **EXTRA)]) == 0
    return out


@pytest.mark.parametrize("disk", ["tmpfs", "file_size_limit"])
def test_a_checkpoint_that_runs_out_of_space_keeps_the_last_one_and_resumes_exactly(disk, reference, tiny_ckpt,
                                                                                     tmp_path, capsys):
    mount = Tmpfs(tmp_path / "disk", 64 << 20) if disk == "tmpfs" else None
    root = mount.path if mount else tmp_path
    run = root / "run"
    try:
        # 1 iteration and its checkpoint, then `--resume ... train.iterations=3`: iteration 2's checkpoint does not fit
        assert main(["train", "--no-progress", *tiny_overrides(tiny_ckpt, run, **{"train.iterations": 1})]) == 0
        ckpt1 = run / "checkpoints" / "iter_000001"
        optim_size = (ckpt1 / "optim.pt").stat().st_size  # the largest file of a checkpoint
        resume = ["train", "--no-progress", "--resume", str(run), f"train.iterations={ITERS}"]
        capsys.readouterr()
        if mount:  # room for iteration 2's images and metrics row, not for its checkpoint
            mount.resize(_used(run) + optim_size // 2)
            rc, err = main(resume), capsys.readouterr().err
            reason = "the file system took only part of it (no space left, a quota or a file-size limit); 0.0 MiB"
        else:
            done = _slas(resume, limit=optim_size // 2)
            rc, err = done.returncode, done.stderr
            reason = "the file system took only part of it (no space left, a quota or a file-size limit)"
        lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
        assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert lines[0].startswith("error: checkpoint iter_000002 was not saved: writing "), lines[0]
        assert f"writing {run / 'checkpoints' / '.tmp_iter_000002' / 'optim.pt'}: {reason}" in lines[0], lines[0]
        assert lines[0].endswith(f"the last checkpoint, {ckpt1}, is intact: free space (or fix the cause), then "
                                 f"`slas train --resume {run}`"), lines[0]
        # the previous checkpoint is intact, no partial one is left, every metrics line is whole
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter_000001"]
        checkpoint.verify(ckpt1)
        text = (run / "metrics.jsonl").read_text()
        assert text.endswith("\n") and [json.loads(ln)["iteration"] for ln in text.splitlines()] == [0, 1, 2]
        # space freed: the resumed run is the uninterrupted one
        if mount:
            mount.resize(64 << 20)
        assert main(["train", "--no-progress", "--resume", str(run)]) == 0
        assert f"resumed {run} from {ckpt1} (iteration 1 of {ITERS})" in capsys.readouterr().out
        assert _strip(read_metrics(run)) == _strip(read_metrics(reference))
    finally:
        if mount:
            shutil.rmtree(run, ignore_errors=True)
            mount.close()


def test_a_first_checkpoint_that_runs_out_of_space_leaves_no_run_folder(tiny_ckpt, tmp_path):
    run = tmp_path / "run"
    done = _slas(["train", "--no-progress", *tiny_overrides(tiny_ckpt, run, **{"train.iterations": 1})],
                 limit=400_000)  # below optim.pt's 1.1 MB, above every image and log
    err = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 1 and err[-1].startswith("error: checkpoint iter_000001 was not saved: "), done.stderr
    assert err[-1].endswith(f"the run had no checkpoint yet, so what it wrote in {run} was removed: start it again")
    assert sum(ln.startswith("error:") for ln in err) == 1 and "Traceback" not in done.stderr
    assert not run.exists()


ROW = {"iteration": 1, **{f"train/stat_{i:03d}": 0.123456789 for i in range(400)}}  # ~12 KB: several disk pages


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem is full."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError:
            pass


@pytest.mark.parametrize("disk", ["tmpfs", "file_size_limit"])
def test_metrics_never_keep_a_partial_line(disk, tmp_path):
    """A row that does not fit is cut back off: the log keeps every earlier row whole, and the next write, once
    there is room, appends after them."""
    if disk == "tmpfs":
        mount = Tmpfs(tmp_path / "disk", 1 << 20)
        try:
            log = MetricsLog(mount.path, Config(), keep_upto=None)
            log.write({"iteration": 0, "eval/x": 1.0})
            before = log.path.read_bytes()
            _fill(mount.path / "filler")
            with pytest.raises(RunFailure, match=r"iteration 1's row was not written \(No space left on device\); the "
                                                 "file keeps every earlier row whole"):
                log.write(ROW)
            assert log.path.read_bytes() == before
            (mount.path / "filler").unlink()
            log.write(ROW)
            assert [json.loads(ln) for ln in log.path.read_text().splitlines()] == [{"iteration": 0, "eval/x": 1.0}, ROW]
        finally:
            mount.close()
        return
    # the file-size limit, in a child: the row's write stops at the limit part-way through the line
    script = ("import json, sys; from pathlib import Path; from slas.config import Config; "
              "from slas.recipe.metrics import MetricsLog; from slas.recipe.checkpoint import RunFailure\n"
              "log = MetricsLog(Path(sys.argv[1]), Config(), keep_upto=0)\n"
              "try:\n    log.write(json.loads(sys.argv[2]))\nexcept RunFailure as e:\n    print(e)\n")
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0, "eval/x": 1.0}\n')
    before = (tmp_path / "metrics.jsonl").read_bytes()
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), json.dumps(ROW)], capture_output=True,
                          text=True, timeout=120, preexec_fn=_file_size_limit(len(before) + 5000))
    assert "iteration 1's row was not written (File too large)" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "metrics.jsonl").read_bytes() == before


def test_resume_drops_a_torn_last_row_with_a_warning(reference, tmp_path, capsys):
    """kill -9 in the middle of a metrics write (a row without its end): --resume says so and continues exactly."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "checkpoints" / "iter_000003")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(reference), str(run)))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # row 3 cut short
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert (f"warning: {run / 'metrics.jsonl'}: dropped unreadable line(s) 4 (a row cut short when the run was killed, "
            "or a damaged file)") in out
    assert _strip(read_metrics(run)) == _strip(read_metrics(reference))

"""What each ``slas`` command does (``slas.apps.cli`` parses the command line and calls one of these).

A user error raises ``CLIError`` (or a ``ValueError``), which the CLI prints as one ``error: ...`` line with exit
status 2, never a traceback.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from pathlib import Path


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _progress(total: int, desc: str):
    """A progress bar on stderr (``update(n)``, ``close()``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr)


def _shapesworld_model(checkpoint: str | None, command: str, ema: bool):
    """The ShapesWorld backbone of `slas sample` / `slas toyworld eval` (``slas.apps.eval.load_model``); a run's
    weights are named on stdout."""
    from slas.apps.eval import load_model

    model = load_model(checkpoint, ema=ema, shapesworld_only=command)
    if model.from_run:
        print(f"weights: {model.description}")
    return model.backbone


def _read_prompts(args) -> list[dict]:
    """ShapesWorld metadata of ``--prompt`` (repeatable) and ``--prompts-file`` (slas.recipe.prompts.load_prompts)."""
    from slas.recipe.prompts import load_prompts
    from slas.toyworld import parse

    metas = [parse(p) for p in args.prompt or []]  # fails fast, naming the bad word
    if args.prompts_file is not None:  # an empty file (or path) is an error of its own, not a missing option
        try:
            metas += [parse(r["prompt"]) for r in load_prompts(args.prompts_file, parse)]  # the grammar's metadata
        except (ValueError, FileNotFoundError) as e:
            raise CLIError(str(e)) from None
    if not metas:
        raise CLIError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return metas


def writable_dir(folder: Path, what: str) -> None:
    """Make ``folder`` (and its parents) and check that a file can be written in it; a CLIError naming ``what`` and
    the reason otherwise (a read-only folder or file system, a file in the way)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        raise CLIError(f"{what}: {folder} is a file, not a folder") from None
    except OSError as e:
        raise CLIError(f"{what}: cannot write in {folder}: {e.strerror or e}") from None


def cmd_sample(args) -> None:
    from PIL import Image

    from slas.evals.stats import format_proportion
    from slas.policy.generate import generate
    from slas.toyworld import verify
    from slas.toyworld.evaluate import labelled_grid, verdict_record

    if args.n < 1 or args.steps < 1:
        raise CLIError(f"-n and --steps must be >= 1, got {args.n} and {args.steps}")
    metas = prompts = _read_prompts(args)
    out = Path(args.out)
    img_dir = out.with_suffix("")
    for folder in (out.parent, img_dir):  # before the model loads and samples: images that cannot be written are lost
        writable_dir(folder, f"--out {out}")
    model = _shapesworld_model(args.checkpoint, "sample", ema=not args.no_ema)
    plist = [m["prompt"] for m in metas for _ in range(args.n)]
    seeds = [args.seed + i for i in range(len(plist))]
    bar = _progress(len(plist), "sampling")
    images = generate(model, plist, seeds, steps=args.steps, progress=bar.update)
    bar.close()
    metas_n = [m for m in metas for _ in range(args.n)]
    results = [verify(img, m) for img, m in zip(images, metas_n, strict=True)]
    verdicts = []  # one line per image: its file, prompt, seed and strict verdict with the reasons
    for i, (img, m, r) in enumerate(zip(images, metas_n, results, strict=True)):
        Image.fromarray(img).save(img_dir / f"{i:04d}.png")
        verdicts.append(json.dumps(verdict_record(m, r, image=f"{i:04d}.png", seed=seeds[i])) + "\n")
    (img_dir / "verdicts.jsonl").write_text("".join(verdicts))
    ncol = args.n if len(prompts) > 1 else min(args.n, 8)
    Image.fromarray(labelled_grid(images, metas_n, results, ncol=ncol)).save(out)  # prompt + pass/fail per image
    correct = sum(r.correct for r in results) / len(results)
    print(f"wrote {out} and {len(images)} images in {img_dir}/ (verdicts.jsonl); strict verifier: "
          f"{format_proportion(correct, len(results))} correct")


def cmd_toyworld_eval(args) -> None:
    """`slas toyworld eval`: the ShapesWorld table of one split; optionally its numbers as JSON and a labelled grid."""
    _toyworld_table(args.checkpoint, args.split, args.n_per_prompt, args.images_per_tag, args.max_prompts, args.steps,
                    ema=not args.no_ema, json_path=args.json, grid=args.grid, grid_n=args.grid_n, seed=args.seed)


def _toyworld_table(checkpoint: str | None, split_name: str, n_per_prompt: int, images_per_tag: int, max_prompts: int,
                    steps: int, *, ema: bool, json_path: str | None, grid: str | None, grid_n: int,
                    seed: int = 0) -> None:
    """The table of `slas toyworld eval` (and `slas toyworld demo`), printed; the summary to ``json_path`` and the
    first ``grid_n`` samples, labelled, to ``grid`` when given."""
    from slas.toyworld import split, verify
    from slas.toyworld.evaluate import balanced_subset, evaluate_shapesworld, format_table, labelled_grid, plan

    if n_per_prompt < 1 or steps < 1 or images_per_tag < 0 or max_prompts < 0:
        raise CLIError(f"--n-per-prompt and --steps must be >= 1, --images-per-tag and --max-prompts >= 0, got "
                       f"{n_per_prompt}, {steps}, {images_per_tag}, {max_prompts}")
    entries = balanced_subset(split(split_name), max_prompts)
    total = len(plan(entries, n_per_prompt, images_per_tag, seed)[0])  # a bad --seed fails before the model loads
    model = _shapesworld_model(checkpoint, "toyworld eval", ema=ema)
    bar = _progress(total, f"eval[{split_name}]")
    t0 = time.time()
    summary, images, metas = evaluate_shapesworld(model, entries, n_per_prompt, steps=steps, progress=bar.update,
                                                  images_per_tag=images_per_tag, seed=seed)
    bar.close()
    summary["split"], summary["n_per_prompt"], summary["steps"] = split_name, n_per_prompt, steps
    summary["seed"] = seed
    summary["wall_time_s"] = round(time.time() - t0, 1)
    print(format_table(summary))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {json_path}")
    if grid:
        from PIL import Image

        shown, shown_metas = images[:grid_n], metas[:grid_n]
        results = [verify(img, m) for img, m in zip(shown, shown_metas, strict=True)]
        Image.fromarray(labelled_grid(shown, shown_metas, results)).save(grid)  # prompt + pass/fail per image
        print(f"wrote {grid}")


def key_values(items: list[str] | None, flag: str, example: str) -> dict:
    """``--flag KEY=VALUE`` (repeatable) -> {KEY: VALUE parsed as YAML}; a malformed item is a CLIError."""
    import yaml

    from slas.config.errors import short

    options: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{flag} {short(item)} must look like KEY=VALUE, e.g. {flag} {example}")
        try:
            options[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise CLIError(f"{flag} {short(item)}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return options


def _eval_options(args, model: str | None, out: Path):
    from slas.apps.eval import EvalOptions

    options = key_values(args.reward_option, "--reward-option", "model_path=/ckpt/pick")
    return EvalOptions(
        suite=args.suite, out=out, model=model, images=Path(args.images) if args.images else None, split=args.split,
        prompts=Path(args.prompts) if args.prompts else None, max_prompts=args.max_prompts,
        n_per_prompt=args.n_per_prompt, images_per_tag=args.images_per_tag, steps=args.steps,
        batch_size=args.batch_size, shift=args.shift, resolution=args.resolution, ema=not args.no_ema,
        save_images=not args.no_images, detector=args.detector,
        detector_path=args.detector_path, clip_path=args.clip_path, device=args.device, reward=args.reward,
        reward_options=options, unigenbench_split=args.unigenbench_split, data_dir=args.data_dir,
        judge_concurrency=args.judge_concurrency, overwrite=args.overwrite, seed=args.seed,
    )


def cmd_eval(args) -> None:
    """`slas eval`: one suite on one model (or on existing images), or --compare two results."""
    from slas.evals.unigenbench import JudgeError

    try:
        _eval(args)
    except (JudgeError, OSError) as e:  # a judge refusing every request, a model directory transformers cannot read
        raise CLIError(str(e)) from None


def _eval(args) -> None:
    from slas.apps import eval as harness
    from slas.recipe.threads import configure

    if args.threads < 0:
        raise CLIError(f"--threads must be >= 0 (0 = the usable cores), got {args.threads}")
    if not args.compare or args.suite:  # anything but comparing two finished results samples or scores
        configure(args.threads, "--threads N", warn=lambda line: print(line, file=sys.stderr))
    if args.compare:
        if args.model or args.images:
            raise CLIError("--compare takes two result directories, or two models with --suite and --out; "
                           "drop --model/--images")
        sides = []
        for label, spec in zip("AB", args.compare, strict=True):
            if (Path(spec) / harness.SUMMARY_FILE).is_file():
                sides.append(Path(spec))
                continue
            if not args.suite or not args.out:
                raise CLIError(f"--compare {spec}: not a `slas eval` output directory (no {harness.SUMMARY_FILE}); to "
                               "evaluate two models first, give --suite and --out")
            out = Path(args.out) / label
            print(harness.format_summary(harness.run_suite(_eval_options(args, spec, out), progress=_progress)))
            print(f"wrote {out}/ ({label} = {spec})\n")
            sides.append(out)
        cmp = harness.compare_results(sides[0], sides[1], n_boot=args.n_boot)
        print(harness.format_compare(cmp))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "compare.json").write_text(json.dumps(cmp, indent=2) + "\n")
            print(f"wrote {Path(args.out) / 'compare.json'}")
        return
    if not args.suite or not args.out:
        raise CLIError("give --suite SUITE and --out DIR (or --compare A B)")
    summary = harness.run_suite(_eval_options(args, args.model, Path(args.out)), progress=_progress)
    print(harness.format_summary(summary))
    print(f"wrote {args.out}/ ({harness.RESULTS_FILE}, {harness.SUMMARY_FILE}"
          f"{', ' + harness.IMAGES_DIR + '/' if not args.no_images and not args.images else ''})")


def cmd_pretrain(args) -> None:
    from slas.toyworld.pretrain import pretrain

    out = args.out or f"runs/pretrain_{args.size}"
    pretrain(out, size=args.size, steps=args.steps, lr=args.lr, seed=args.seed)


CONFIGS = Path(__file__).resolve().parents[3] / "configs"  # the shipped configs (a source checkout)


def config_path(arg: str | None) -> str | None:
    """``--config``: a YAML path, or the name of a shipped config (``toy_slas`` = configs/toy_slas.yaml), from any
    working directory."""
    if arg is None or Path(arg).is_file():
        return arg
    for cand in (CONFIGS / arg, CONFIGS / f"{arg}.yaml", CONFIGS / Path(arg).name):
        if cand.is_file():
            return str(cand)
    shipped = sorted(p.stem for p in CONFIGS.glob("*.yaml")) if CONFIGS.is_dir() else []
    raise CLIError(f"--config {arg}: no such file, and no shipped config of that name (shipped: {', '.join(shipped)})")


def cmd_config(args) -> None:
    """`slas config show` (the resolved config, each field with its documentation) / `slas config check F`."""
    from slas.config import describe, load_config
    from slas.config.paths import check_paths

    if args.action == "check":
        for f in args.files:
            cfg = load_config(config_path(f))
            check_paths(cfg, f)  # the model, reward and prompt files it names, each one missing listed
            print(f"{f}: ok")
        return
    print(describe(load_config(config_path(args.config), args.overrides)), end="")


def cmd_train(args) -> None:
    from slas.config import load_config
    from slas.recipe.run_dir import RunDir
    from slas.recipe.train import train

    if args.resume:
        paths = RunDir(args.resume)
        run = paths.root
        if not paths.is_run():
            raise CLIError(f"--resume {run}: no {paths.config.name} there; is it a run directory of `slas train`? (a "
                           "start that fails before its first checkpoint leaves none: start it again without --resume)")
        if args.config:
            raise CLIError("--resume continues a run with its own config.yaml; drop --config")
        extra = [o for o in args.overrides if o.partition("=")[0].strip() != "train.iterations"]
        if extra:
            raise CLIError(f"--resume continues a run with its own config.yaml; the one override it takes is "
                           f"train.iterations=N (to extend the run): drop {' '.join(extra)}")
        cfg = load_config(paths.config, [f"run.out_dir={run}", *args.overrides])
        _extend(run, load_config(paths.config, [f"run.out_dir={run}"]), cfg)
    else:
        cfg = load_config(config_path(args.config), args.overrides)
    train(cfg, resume=bool(args.resume), progress=not args.no_progress)


def _extend(run: Path, before, after) -> None:
    """`slas train --resume RUN train.iterations=N`: N must exceed the run's own count; says what changes."""
    from slas.recipe.builders import lr_lambda
    from slas.recipe.checkpoint import read_state
    from slas.recipe.run_dir import RunDir

    n0, n = before.train.iterations, after.train.iterations
    if n == n0:
        return
    if n < n0:
        raise CLIError(f"train.iterations={n} with --resume must be larger than the run's own {n0}: --resume extends a "
                       "run, it does not shorten one")
    msg = f"extending {run} from {n0} to {n} iterations"
    if after.train.lr_schedule == "cosine":  # the schedule's length is train.iterations: its remainder changes
        ckpt = RunDir(run).latest()
        step = (read_state(ckpt)["iteration"] if ckpt else 0) * after.train.updates_per_iter
        lr0, lr1 = after.train.lr * lr_lambda(before)(step), after.train.lr * lr_lambda(after)(step + 1)
        msg += (f"; its cosine LR schedule now spans {n} iterations, so the remaining updates follow that schedule "
                f"(LR {lr0:.3g} now, {lr1:.3g} at the next update): the result differs from a run of {n} iterations "
                "from the start")
    print(msg)


def cmd_compare(args) -> None:
    """`slas compare`: methods x seeds (x sweep values) as separate training processes; results with 95% CIs."""
    from slas.apps.compare import compare, parse_seeds, parse_sweep

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise CLIError("--methods must name at least one estimator, e.g. --methods slas,grpo")
    command = "slas " + " ".join(shlex.quote(a) for a in args.argv)
    res = compare(config_path(args.config), methods, parse_seeds(args.seeds), args.out,
                  [parse_sweep(s) for s in args.sweep or []],
                  args.overrides, jobs=args.jobs, threads=args.threads, gold_target=args.gold_target, command=command)
    print(Path(args.out, "summary.md").read_text())
    if res.failed:
        raise CLIError(f"{len(res.failed)} run(s) did not finish: {', '.join(res.failed)} (logs in {args.out}/logs/); "
                       "run the same command again to resume them")


def cmd_pref(args) -> None:
    from slas.toyworld.pref_train import train_pref

    train_pref(args.out, checkpoint=args.checkpoint, seed=args.seed)


def cmd_export(args) -> None:
    """Write a run's trained weights in a format stock diffusers pipelines load."""
    from slas.policy import adapter_class
    from slas.recipe.run_dir import latest_checkpoint, load_run

    run, out = Path(args.run_dir), Path(args.out)
    latest_checkpoint(run)  # a run with a checkpoint, before anything else
    if out.exists() and any(out.iterdir()):
        raise CLIError(f"--out {out} is not empty; choose a new directory")

    def exportable(cfg) -> None:
        if not hasattr(adapter_class(cfg.model.backbone), "export"):
            raise CLIError(f"backbone {cfg.model.backbone!r} has no diffusers export; its checkpoints "
                           "(checkpoints/iter_*/model.safetensors) are its format")

    loaded = load_run(run, ema=bool(args.ema), overrides=[f"model.device={args.device}"],
                      check=exportable)
    print(f"weights: {loaded.description}")
    cfg = loaded.cfg
    info = {"run_dir": str(run.resolve()), "checkpoint": loaded.checkpoint.name, "iteration": loaded.iteration,
            "backbone": cfg.model.backbone, "base_model": cfg.model.path, "weights": "ema" if args.ema else "policy"}
    for path in loaded.backbone.export(out, info):
        print(f"wrote {path}")


def cmd_demo(args) -> None:
    """Sample the eval set, verify, and write a grid + per-tag table."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _toyworld_table(args.checkpoint, "eval", args.n_per_prompt, 0, 0, args.steps, ema=True,
                    json_path=str(out / "eval.json"), grid=str(out / "grid.png"), grid_n=64)
    print(f"demo outputs in {out}/ (eval.json, grid.png)")


def cmd_reward_server(args) -> None:
    from slas.rewards.server import serve
    from slas.rewards.wire import read_token

    options = key_values(args.option, "--option", "processor_path=/ckpt/clip")
    if args.model_path is not None:
        options["model_path"] = args.model_path
    if args.max_bytes < 1 or args.batch_size < 1 or args.queue_size < 1:
        raise CLIError(f"--max-bytes, --batch-size and --queue-size must be >= 1, got {args.max_bytes}, "
                       f"{args.batch_size} and {args.queue_size}")
    if not (0 < args.time_limit < math.inf and 0 <= args.cache_seconds < math.inf):  # also refuses nan
        raise CLIError(f"--time-limit must be > 0 and --cache-seconds >= 0 seconds (finite), got {args.time_limit} "
                       f"and {args.cache_seconds}")
    if args.token_file is not None and args.insecure_no_auth:
        raise CLIError("--insecure-no-auth serves without a token, --token-file with one: give only one of them")
    token = read_token(args.token_file) if args.token_file is not None else None
    try:
        serve(args.reward, options, args.host, args.port, args.max_bytes, args.batch_size, token=token,
              insecure_no_auth=args.insecure_no_auth, queue_size=args.queue_size, time_limit=args.time_limit,
              cache_seconds=args.cache_seconds)
    except (ImportError, OSError) as e:  # a missing optional package, a busy port
        raise CLIError(str(e)) from None


def cmd_report(args) -> None:
    from slas.apps.report import write_report

    runs = [Path(p) for p in args.run_dirs]
    out = Path(args.out) if args.out else runs[0] / "report.html" if len(runs) == 1 else Path("report.html")
    print(f"wrote {write_report(runs, out)}")


"""The ``slas`` command line: its parser and entry point; what each command does is in ``slas.apps.commands``.

Every user error (bad prompt, missing checkpoint, bad option) ends in one
``error: ...`` line and exit status 2, never a traceback; a run stopped by its environment (a full disk, a torchrun
process that died) in one ``error: ...`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from slas.apps.commands import (
    CLIError,
    cmd_compare,
    cmd_config,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_pref,
    cmd_pretrain,
    cmd_report,
    cmd_reward_server,
    cmd_sample,
    cmd_toyworld_eval,
    cmd_train,
)


class _DefaultsFormatter(argparse.HelpFormatter):
    """--help shows each option's default, unless it is None or False or its help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Sub-command parsers that show each option's default in --help."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*a, **kw)


RUN_OR_CHECKPOINT = ("a run directory of `slas train` (its latest checkpoint: the EMA weights when the run keeps one, "
                     "else the policy's) or one of its checkpoints/iter_N, a ShapesWorld checkpoint directory, or a "
                     "shipped name (toy_S, toy_M, toy_L; default toy_M)")


def build_parser() -> argparse.ArgumentParser:
    from slas.toyworld.evaluate import EVAL_STEPS

    p = argparse.ArgumentParser(prog="slas", description="RL post-training of text-to-image flow models (SLAS).")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="sample images for prompts and write a grid")
    s.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    s.add_argument("--prompts-file", help="text file, one prompt per line, or GenEval-style metadata jsonl")
    s.add_argument("-n", type=int, default=8, help="images per prompt")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (the k-th image drawn uses seed + k)")
    s.add_argument("--out", default="grid.png", help="grid PNG; single images go to a folder of the same stem")
    s.add_argument("--checkpoint", help=RUN_OR_CHECKPOINT)
    s.add_argument("--no-ema", action="store_true", help="use a run's raw weights even when it keeps an EMA")
    s.add_argument("--steps", type=int, default=EVAL_STEPS, help="ODE steps")
    s.set_defaults(fn=cmd_sample)

    cf = sub.add_parser("config", help="show the resolved config with each field's documentation, or check files")
    cs = cf.add_subparsers(dest="action", required=True, parser_class=_Parser)
    show = cs.add_parser("show", help="print the resolved config (YAML), each field preceded by its documentation")
    show.add_argument("--config", help="YAML config or a shipped config's name (default: built-in defaults)")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4")
    show.set_defaults(fn=cmd_config)
    chk = cs.add_parser("check", help="validate config files and check that every model, reward and prompt file "
                        "they name is there (one error line for the first file with a problem, listing every "
                        "missing file)")
    chk.add_argument("files", nargs="+", metavar="F", help="YAML config files or shipped config names")
    chk.set_defaults(fn=cmd_config)

    t = sub.add_parser("train", help="GRPO post-training (SLAS, DanceGRPO, Dr.GRPO, ...) from a YAML config")
    t.add_argument("--config", help="YAML config, or a shipped config's name such as toy_dancegrpo (default: built-in "
                   "defaults = configs/toy_slas.yaml)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 advantage.params.gamma=0.5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its last intact checkpoint; "
                   "the one override it takes is train.iterations=N, to extend the run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("compare", help="estimators x seeds (x a sweep) of one config, with 95%% CIs, curves and grids",
                       description="Each run is a separate `slas train` process; finished runs are skipped and "
                                   "unfinished ones resumed. Writes results.csv, summary.md, plots/ and grids/ into "
                                   "--out. docs/hacking.md")
    c.add_argument("--config", help="base YAML config (default: built-in defaults = configs/toy_slas.yaml)")
    c.add_argument("--methods", default="slas,grpo,drgrpo,grpo_global_std",
                   help="comma-separated advantage estimators (default: %(default)s)")
    c.add_argument("--seeds", default="3", help="a count (5 = seeds 0..4) or a comma list (0,3; 3, = seed 3 alone) (default 3)")
    c.add_argument("--out", required=True, help="output directory (run it again with the same arguments to resume)")
    c.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                   help="sweep a config key for the methods that accept it, e.g. advantage.params.gamma=0.25,0.5,1,2 "
                        "(repeatable: the product)")
    c.add_argument("--jobs", type=int, help="runs at once (default: usable cores // --threads, at least 1)")
    c.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    c.add_argument("--gold-target", type=float, help="in-domain gold accuracy for 'iterations to target' "
                                                     "(default: each run's iteration-0 value + 0.05)")
    c.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.iterations=30")
    c.set_defaults(fn=cmd_compare)

    x = sub.add_parser("export", help="write a run's weights for stock diffusers pipelines (LoRA or full model)")
    x.add_argument("run_dir", metavar="RUN_DIR", help="run directory of `slas train` (its last checkpoint is exported)")
    x.add_argument("--out", required=True, help="new directory: pytorch_lora_weights.safetensors for "
                   "pipeline.load_lora_weights(OUT), or OUT/transformer (OUT/unet) for a full fine-tune")
    x.add_argument("--ema", action="store_true", help="export the EMA weights instead of the policy's")
    x.add_argument("--device", default="cpu", help="where to load the model for the export (default cpu)")
    x.set_defaults(fn=cmd_export)

    from slas.rewards.server import DEFAULT_CACHE_SECONDS, DEFAULT_QUEUE_SIZE, DEFAULT_TIME_LIMIT
    from slas.rewards.wire import DEFAULT_MAX_BYTES, DEFAULT_PORT

    r = sub.add_parser("reward-server", help="serve a registered reward over HTTP (the `remote` reward calls it)",
                       description="Serve a registered reward over HTTP for the `remote` reward. docs/rewards.md")
    r.add_argument("--reward", required=True, help="registered reward name, e.g. pickscore, hps, toy_score")
    r.add_argument("--model-path", help="the reward's model_path option (a local checkpoint)")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="another option of the reward (repeatable; YAML value), e.g. processor_path=/ckpt/clip")
    r.add_argument("--host", default="127.0.0.1", help="bind address; one that is not loopback needs --token-file "
                   "(or --insecure-no-auth)")
    r.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one")
    r.add_argument("--token-file", metavar="PATH", help="a file holding a token (one line): every request but GET "
                   "/health must then send `Authorization: Bearer <token>`, else 401. Plain HTTP: put TLS in front "
                   "when the token crosses a network (docs/rewards.md)")
    r.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a non-loopback --host without a token: anyone who reaches it can run the reward model")
    r.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="request body limit (413 above it)")
    r.add_argument("--batch-size", type=int, default=256, help="images per reward-model call")
    r.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE, metavar="N",
                   help="scoring requests held at once (being read, waiting or scored); one more is answered 503 "
                        "with Retry-After")
    r.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                   help="a request not answered within this many seconds gets 504; its scoring goes on, and a retry "
                        "with the same X-Request-Id gets the result")
    r.add_argument("--cache-seconds", type=float, default=DEFAULT_CACHE_SECONDS, metavar="SECONDS",
                   help="how long the answer to a request id is kept, so that a retry is not scored twice")
    r.set_defaults(fn=cmd_reward_server)

    rp = sub.add_parser("report", help="one self-contained HTML page of runs: config, curves, sample grids, evals")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of `slas train` (several: overlaid)")
    rp.add_argument("--out", help="HTML file (default RUN_DIR/report.html for one run, else ./report.html)")
    rp.set_defaults(fn=cmd_report)

    from slas.apps.eval import SUITES

    ev = sub.add_parser("eval", help="evaluate a run, a pipeline or the base model on a suite; --compare two results",
                        description="Sample with the deterministic ODE sampler, score, write results.jsonl + "
                                    "summary.json (+ images/) into --out, print a table. docs/evaluation.md")
    ev.add_argument("--suite", choices=SUITES)
    ev.add_argument("--model", metavar="RUN_DIR|PIPELINE_DIR|CKPT_DIR|base",
                    help="a run of `slas train` (latest checkpoint) or one of its checkpoints/iter_N, a ShapesWorld "
                         "checkpoint, a diffusers pipeline, "
                         "or base (the shipped ShapesWorld model)")
    ev.add_argument("--out", metavar="DIR", help="output directory (one that holds a result is refused unless "
                    "--overwrite)")
    ev.add_argument("--overwrite", action="store_true", help="replace the result already in --out")
    ev.add_argument("--compare", nargs=2, metavar=("A", "B"),
                    help="B versus A with 95%% CIs: two output directories of `slas eval`, or two models (then "
                         "--suite and --out, and both are evaluated into OUT/A and OUT/B)")
    ev.add_argument("--images", metavar="DIR", help="geneval: score existing images in GenEval's folder layout")
    ev.add_argument("--split", choices=["eval", "test", "train"], default="eval", help="ShapesWorld prompt split")
    ev.add_argument("--prompts", metavar="FILE", help="prompts file (text lines or GenEval metadata JSONL)")
    ev.add_argument("--max-prompts", type=int, default=0, help="a fixed tag-balanced subset of this many prompts")
    ev.add_argument("--n-per-prompt", type=int, help="images per prompt (default 1; unigenbench 4)")
    ev.add_argument("--images-per-tag", type=int, default=0, help="images per tag, cycling over its prompts")
    ev.add_argument("--seed", type=int, default=0, help="evaluation noise: S in 1..15 adds S x 2^27 to every image's seed "
                    "(fresh noise for the same prompts; 0 = the usual seeds)")
    ev.add_argument("--steps", type=int, help=f"ODE steps (default: the run's eval.steps, else {EVAL_STEPS})")
    ev.add_argument("--batch-size", type=int, help="images per sampler forward (default 128 ShapesWorld, 8 diffusers)")
    ev.add_argument("--shift", type=float, help="flow time shift of a diffusers velocity model's ODE (default: the "
                                                "run's eval.shift, or the stock pipeline's, dynamic for FLUX.1-dev)")
    ev.add_argument("--resolution", type=int, default=0, help="image side of a diffusers pipeline (0 = its default)")
    ev.add_argument("--no-ema", action="store_true", help="use a run's raw weights even when it keeps an EMA")
    ev.add_argument("--no-images", action="store_true", help="do not write the images")
    ev.add_argument("--detector", choices=["shapesworld", "mask2former"],
                    help="geneval detector (default: shapesworld for ShapesWorld models, else mask2former)")
    ev.add_argument("--detector-path", metavar="DIR", help="mask2former: local Mask2Former instance checkpoint")
    ev.add_argument("--clip-path", metavar="DIR", help="mask2former: local CLIPModel for the colour classifier")
    ev.add_argument("--device", default="auto", help="device of a diffusers pipeline and of the detector models")
    ev.add_argument("--threads", type=int, default=0, help="torch threads (default 0: the usable cores, or "
                    "OMP_NUM_THREADS); a warning says so when the cores are already busy")
    ev.add_argument("--reward", help="reward suite: registered reward name")
    ev.add_argument("--reward-option", action="append", metavar="KEY=VALUE", help="reward option (repeatable)")
    ev.add_argument("--unigenbench-split", choices=["short", "long"], default="short")
    ev.add_argument("--data-dir", help="unigenbench data folder (default $SLAS_DATA/unigenbench)")
    ev.add_argument("--judge-concurrency", type=int, default=8)
    ev.add_argument("--n-boot", type=int, default=10_000, help="--compare: bootstrap replicates")
    ev.set_defaults(fn=cmd_eval)

    tw = sub.add_parser("toyworld", help="ShapesWorld: eval, pretrain, train-pref, demo").add_subparsers(
        dest="tw", required=True, parser_class=_Parser)
    e = tw.add_parser("eval", help="GenEval-style table on a ShapesWorld split")
    e.add_argument("--n-per-prompt", type=int, default=1, help="images per prompt")
    e.add_argument("--split", choices=["eval", "test", "train"], default="eval", help="prompt split")
    e.add_argument("--images-per-tag", type=int, default=0,
                   help="sample this many images per tag, cycling over its prompts (for unbalanced splits)")
    e.add_argument("--max-prompts", type=int, default=0,
                   help="a fixed tag-balanced subset of this many prompts (0 = the whole split)")
    e.add_argument("--seed", type=int, default=0, help="evaluation noise: S in 1..15 adds S x 2^27 to every image's seed "
                   "(fresh noise for the same prompts; 0 = the usual seeds)")
    e.add_argument("--json", help="also write the numbers to this JSON file")
    e.add_argument("--grid", help="also write a grid PNG of the first samples")
    e.add_argument("--grid-n", type=int, default=64, help="images in the grid")
    e.add_argument("--checkpoint", help=RUN_OR_CHECKPOINT)
    e.add_argument("--no-ema", action="store_true", help="use a run's raw weights even when it keeps an EMA")
    e.add_argument("--steps", type=int, default=EVAL_STEPS, help="ODE steps")
    e.set_defaults(fn=cmd_toyworld_eval)

    pt = tw.add_parser("pretrain", help="pretrain a ShapesWorld model from scratch (reproducible)")
    pt.add_argument("--size", choices=["S", "M", "L"], default="M", help="model size (S: half M's channels, L: 1.5x)")
    pt.add_argument("--out", help="output checkpoint directory (default runs/pretrain_SIZE); resumes if interrupted")
    pt.add_argument("--steps", type=int, help="override the size's default number of steps")
    pt.add_argument("--lr", type=float, help="override the size's default learning rate (constant after warmup, L's "
                    "halved at step 2000; a resumed run may lower it, e.g. after divergence)")
    pt.add_argument("--seed", type=int, default=0, help="seeds the init and every batch")
    pt.set_defaults(fn=cmd_pretrain)

    tp = tw.add_parser("train-pref", help="train the toy_pref reward model on biased, noisy preference pairs")
    tp.add_argument("--out", required=True, help="output directory (model.safetensors + config.json)")
    tp.add_argument("--checkpoint", help="base model that draws the pairs (default: the shipped toy_M)")
    tp.add_argument("--seed", type=int, default=0, help="seeds the pairs, the label noise and the init")
    tp.set_defaults(fn=cmd_pref)

    d = tw.add_parser("demo", help="sample + evaluate the eval set; write grid and table")
    d.add_argument("--out", default="runs/demo", help="output folder (grid PNG and table)")
    d.add_argument("--n-per-prompt", type=int, default=1, help="images per prompt")
    d.add_argument("--checkpoint", help=RUN_OR_CHECKPOINT)
    d.add_argument("--steps", type=int, default=EVAL_STEPS, help="ODE steps")
    d.set_defaults(fn=cmd_demo)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with dotted overrides accepted anywhere among the flags (`slas train --config F a.b=1
    --no-progress c.d=2`): argparse takes a positional list only in one piece, and hands the pieces after the first
    flag back as unknown arguments."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]  # in command-line order: a later override of a key wins
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from slas.config import ConfigError
    from slas.recipe.checkpoint import RunFailure  # a full disk, a dead torchrun process: one line, exit 1
    from slas.rewards.remote import RemoteRewardError  # the reward server failed a call: one line, not a traceback
    from slas.toyworld.world import PromptError

    try:
        args.fn(args)
    except RunFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (CLIError, ConfigError, PromptError, FileNotFoundError, ValueError, RemoteRewardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if getattr(e, "exit_code", None) is not None:  # slas train stopped cleanly and said where it saved
            return e.exit_code
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

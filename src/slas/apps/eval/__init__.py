"""``slas eval``: sample a model with the deterministic ODE sampler, score one suite, write the results; compare two.

Suites (``SUITES``: one ``Suite`` class each, which samples and scores, summarises, and prints; ``suites.py``):

- ``geneval``: GenEval's rules (``slas.evals.geneval``) over a detector (``slas.evals.detectors``): the ShapesWorld
  verifier for ShapesWorld models, Mask2Former + CLIP for real images. One line per image in upstream's result
  format (``evaluation/evaluate_images.py``: ``filename, tag, prompt, correct, reason, metadata, details``, the last
  two JSON strings), so upstream's ``summary_scores.py`` reads ``results.jsonl`` as is.
- ``toyworld``: the ShapesWorld table of ``slas toyworld eval`` (strict gold accuracy, GenEval rules, exact counts).
- ``reward``: any registered reward (``slas.rewards``), mean with a 95% confidence interval.
- ``unigenbench``: the UniGenBench++ judge client (``slas.evals.unigenbench``); needs a judge endpoint.

Every run writes into its output directory ``results.jsonl`` (one record per image), ``summary.json`` (the scores and
every setting needed to reproduce them) and, unless turned off, ``images/`` in GenEval's folder layout
(``NNNNN/metadata.jsonl`` + ``NNNNN/samples/NNNN.png``, ``geneval_folder.py``), which upstream's
``evaluate_images.py`` also reads.

Sampling is deterministic and the same as training's held-out evaluation: ``toyworld.evaluate.plan`` fixes each
image's seed from its prompt's position, and every backbone samples through ``slas.policy.generate`` with its own
sampler at eta 0 (the Euler ODE, or deterministic DDIM), as ``slas toyworld eval`` and training's evaluation do
(``sampling.py``).

Modules: ``options`` (the request, its errors, the output file names), ``models`` (the one model loader of
``slas eval``, ``slas sample`` and ``slas toyworld eval``), ``sampling``, ``geneval_folder``, ``suites``, ``run``
(``run_suite``) and ``compare`` (``--compare``).
"""

from slas.apps.eval.compare import COMPARABLE, compare_results, format_compare, load_results
from slas.apps.eval.geneval_folder import read_geneval_folder
from slas.apps.eval.models import PIPELINE_BACKBONES, Model, load_model
from slas.apps.eval.options import (
    IMAGES_DIR,
    RESULTS_FILE,
    SUMMARY_FILE,
    EvalError,
    EvalOptions,
    NotSupportedError,
    Progress,
)
from slas.apps.eval.run import format_summary, run_suite
from slas.apps.eval.sampling import read_prompts_file
from slas.apps.eval.suites import SUITES

__all__ = [
    "COMPARABLE",
    "IMAGES_DIR",
    "PIPELINE_BACKBONES",
    "RESULTS_FILE",
    "SUITES",
    "SUMMARY_FILE",
    "EvalError",
    "EvalOptions",
    "Model",
    "NotSupportedError",
    "Progress",
    "compare_results",
    "format_compare",
    "format_summary",
    "load_model",
    "load_results",
    "read_geneval_folder",
    "read_prompts_file",
    "run_suite",
]

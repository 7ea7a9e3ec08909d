"""The ShapesWorld study's tables, verdicts and figures (docs/shapesworld-study.md), read from the runs of
research/study.sh; research/study_tables.py is the command.

One concept per module: ``runs`` (the study's parts and arms, and the loaders of their finished runs), ``stats``
(the per-run quantities and their intervals over seeds), ``proxy_tables`` (the tables of a hackable proxy: part 1,
and part 2's proxy parts), ``gold_tables`` (part 2's tables on the gold reward), ``contrasts`` (part 2's one-line
paired contrasts: the step-size control, the gamma sweep, the push on nft's r), ``verdicts`` (a verdict per claim of
the paper), ``part1`` and ``part2`` (each part's text, in order) and ``plots`` (the figures and grids).
"""

"""eegstore's benchmark suite: ``python -m benchmarks run [--quick] [--out DIR]``.

Modules: :mod:`benchmarks.runner` (orchestration), :mod:`benchmarks.loading`
(loading strategies, warm/cold, 1x/2x/4x), :mod:`benchmarks.loaders` (the
strategies, run one per subprocess), :mod:`benchmarks.build` (parallel build,
braindecode vs eegstore on the same recordings, codec sweep),
:mod:`benchmarks.layout` (store layout: dtype x codec x chunk size, float16 error),
:mod:`benchmarks.gpu` (GPU feed), :mod:`benchmarks.procmon` (process-tree
memory sampling, page-cache control), :mod:`benchmarks.report` (targets,
Markdown, plots), :mod:`benchmarks.machine` (machine description).
"""

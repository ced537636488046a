"""``pairflow app``: a local web page to generate, explore and score digit pairs.

- :mod:`pairflow.app.core`: the model work as plain functions (no gradio needed), gathered
  from one module per concept: :mod:`~pairflow.app.inputs` (what a user types, checked),
  :mod:`~pairflow.app.model` and :mod:`~pairflow.app.loading` (the model, and the one place
  that loads it), :mod:`~pairflow.app.generate`, :mod:`~pairflow.app.pictures` (grids and
  downloads), :mod:`~pairflow.app.explore` (interpolation strips), :mod:`~pairflow.app.uploads`
  and :mod:`~pairflow.app.score`;
- :mod:`pairflow.app.ui`: the gradio page that calls them (``pip install "pairflow[app]"``).
"""

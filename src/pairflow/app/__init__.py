"""``pairflow app``: a local web page to generate, explore and score digit pairs.

- :mod:`pairflow.app.core`: the model work as plain functions (no gradio needed);
- :mod:`pairflow.app.ui`: the gradio page that calls them (``pip install "pairflow[app]"``).
"""

"""The page of ``pairflow app``: gradio widgets wired to :mod:`pairflow.app.core`.

Three tabs (Generate, Explore, Score) share one model choice. Every handler catches what a
user can get wrong and returns it as a message in the page; an unexpected error is logged on
the server's stderr and shown as a one-line message, never a traceback, and the server keeps
serving.

gradio is imported here only: ``import pairflow.app`` works without it.
"""

from __future__ import annotations

import os

# Before gradio is imported: no usage statistics, no version check, no hub look-ups, no node
# server. tests/test_app.py checks that the server and the page reach nothing but loopback.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_SSR_MODE"] = "False"

import functools  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pairflow.app import core  # noqa: E402
from pairflow.utils import atomic_write_bytes  # noqa: E402

__all__ = ["build_app", "launch"]

BUTTONS = ["download", "fullscreen"]  # not "share": it would upload to a hub
CANVAS_SCALE = 10  # the drawing canvas is 280x560 for a 28x56 pair
UPLOAD_HEIGHT = 28 * CANVAS_SCALE  # pixels: the upload's box is as tall as the canvas
# An uploaded 28x56 picture is shown at its own size in a box that then shrinks to a strip;
# scaled up to fill the box instead, with its pixels kept sharp, as the canvas shows a pair.
CSS = """
#score-upload img {
    width: 100%;
    height: 100%;
    object-fit: contain;
    image-rendering: pixelated;
}
"""
INTRO = (
    "# pairflow\n"
    "RealNVP normalizing flows for image pairs (label = left class x 10 + right): MNIST digits "
    "and Fashion-MNIST clothes (28x56, grayscale), CIFAR-10 (32x64, colour). Pick a model, then "
    "**Generate** pairs, **Explore** its latent space, or **Score** a pair you draw or upload."
)


def _message(text: str, kind: str = "error") -> str:
    return f"**{'Error' if kind == 'error' else 'Note'}:** {text}"


def _safe(n_outputs: int) -> Callable:
    """Wrap a handler whose last output is its message box: errors become messages.

    On an error every other output is cleared (None), so no stale result stays on screen.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except core.AppInputError as err:
                message = _message(str(err))
            except Exception as err:  # a bug, not the user's fault: log it, keep serving
                traceback.print_exc(file=sys.stderr)
                message = _message(
                    f"something went wrong ({type(err).__name__}: {str(err)[:300]}); "
                    "the server log has the details"
                )
            return (*([None] * (n_outputs - 1)), message)

        return wrapper

    return decorate


class _Handlers:
    """The page's event handlers, holding the model cache and where downloads go."""

    def __init__(self, data_dir: str | None, download_dir: Path, cache: core.ModelCache | None):
        self.cache = cache or core.ModelCache()
        self.data_dir = data_dir
        self.download_dir = download_dir
        self._counter = 0

    @staticmethod
    def _noun(loaded: core.LoadedModel) -> str:
        return "pair" if loaded.layout == "pair" else "class"

    def _model(self, choice: str, run: str) -> core.LoadedModel:
        return self.cache.get(run.strip() if run and run.strip() else choice or "")

    def _file(self, name: str, data: bytes) -> str:
        # One folder per result: gradio serves files by path, and a later click must not
        # change what an earlier download link returns.
        self._counter += 1
        folder = Path(tempfile.mkdtemp(prefix=f"{self._counter:05d}-", dir=self.download_dir))
        return str(atomic_write_bytes(folder / name, data))

    def describe(self, choice: str, run: str):
        try:
            return self._model(choice, run).describe()
        except core.AppInputError as err:
            return _message(str(err))

    def follow_temperature(self, choice, run, pair, shown_default):
        """Move the slider to the sampling default when it changes (a label <-> "any" on a
        conditional flow: 0.7 <-> 0.8; another model with its own default, e.g. ``seed``'s
        1.0); otherwise leave the user's setting alone."""
        try:
            default = core.default_temperature_for(self._model(choice, run), pair)
        except core.AppInputError:  # no such model: the info line already says so
            return gr.update(), shown_default
        if default == shown_default:
            return gr.update(), shown_default
        return gr.update(value=default), default

    def show_guidance(self, choice: str, run: str, pair="37", shown_default=0.0):
        """The guidance slider shows only for a model trained with label dropout, and moves
        to the CLI's default for the model and pair when that changes (a shipped model's own
        weight where its sweep chose one, else 0); otherwise the user's setting stays."""
        try:
            loaded = self._model(choice, run)
        except core.AppInputError:  # no such model: the info line already says so
            return gr.update(visible=False), shown_default
        default = core.default_guidance_for(loaded, pair)
        if default == shown_default:
            return gr.update(visible=loaded.guidable), shown_default
        return gr.update(visible=loaded.guidable, value=default), default

    def generate(self, choice, run, pair, temperature, seed, count, guidance=None):
        loaded = self._model(choice, run)
        guidance = guidance if loaded.guidable else None  # the slider is hidden otherwise
        images, labels = core.generate(loaded, pair, count, temperature, seed, guidance)
        grid = core.grid_image(images)  # RGB for colour models
        stem = f"pairflow-{loaded.name.replace('/', '_')}-{'any' if labels is None else pair}"
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
        png = self._file(f"{stem}.png", core.png_bytes(grid))
        npz = self._file(f"{stem}.npz", core.npz_bytes(images, labels))
        if labels is None:
            what = "no label (unconditional model)"
        elif len(set(labels.tolist())) == 1:
            what = f"{self._noun(loaded)} {core.label_text(loaded, int(labels[0]))}"
        else:
            what = f"random {self._noun(loaded)}s: " + ", ".join(
                core.label_text(loaded, int(v)) for v in labels
            )
        text = (
            f"{len(images)} samples from {loaded.name}, {what}, temperature "
            f"{float(temperature):g}"
            + ("" if guidance is None else f", guidance {float(guidance):g}")
            + f", seed {int(seed)}; {core.grid_nrow(len(images))} per row "
            f"({loaded.items}s, {'x'.join(map(str, loaded.image_shape))})"
        )
        return (
            grid,
            gr.update(value=png, interactive=True),
            gr.update(value=npz, interactive=True),
            text,
        )

    def explore(
        self, choice, run, mode, index_a, index_b, pair_a, pair_b, steps, temperature, seed
    ):
        loaded = self._model(choice, run)
        if mode != EXPLORE_MODES[1]:
            strip, ends, labels = core.interpolate_test_pairs(
                loaded, index_a, index_b, steps, self.data_dir
            )
            a, b = int(index_a), int(index_b)
            name_a, name_b = (core.label_text(loaded, int(v)) for v in ends)
            what = f"{loaded.items} test set #{a} ({name_a}) -> #{b} ({name_b})"
        else:
            strip, ends, labels = core.interpolate_labels(
                loaded, pair_a, pair_b, steps, temperature, seed
            )
            name_a, name_b = (core.label_text(loaded, int(v)) for v in ends)
            what = f"a sample of {name_a} -> a sample of {name_b}"
        text = f"{len(strip)} steps along the cos/sin latent path, {what}"
        if labels is not None:
            noun = self._noun(loaded)
            text += (
                f"; every step decoded under the start {noun}'s label "
                f"{core.label_text(loaded, labels[0])} (one label all the way makes a morph; "
                "the flow is invertible under any label, so the strip still ends on the other)"
            )
        return core.grid_image(strip, nrow=len(strip)), text

    def _score(self, loaded: core.LoadedModel, x: torch.Tensor, label: str):
        result = core.score(loaded, x, label)
        lines = []
        if result.bits_per_dim is None:
            lines.append(
                f"- bits/dim: not available for this model (a {loaded.kind.name} has no likelihood)"
            )
        else:
            bound = loaded.likelihood_bound
            what = f"bits/dim ({bound})" if bound else "bits/dim"
            given = ""
            if result.label is not None:
                source = {
                    "given": "given",
                    "classifier": "the classifier's reading",
                    "posterior": "the model's own most probable label",
                }[result.label_source]
                given = f" given {self._noun(loaded)} {core.label_text(loaded, result.label)}"
                given += f" ({source})"
            lines.append(f"- {what}{given}: **{result.bits_per_dim:.4f}**")
        p, classes = result.digit_probs, loaded.spec.classes
        if p is None:
            lines.append(f"- classifier reading: not available ({result.classifier_note})")
        else:
            sides = ["left", "right"] if len(p) == 2 else ["class"]
            parts = []
            for side, row in zip(sides, p, strict=True):
                k = int(row.argmax())
                parts.append(f"{side} {classes[k]} p={float(row[k]):.3f}")
            lines.append(
                f"- {loaded.spec.title} classifier reads: "
                f"**{core.label_text(loaded, result.reading)}** ({', '.join(parts)})"
            )
        if result.class_posterior is None:
            lines.append(
                "- the model's own p(y | x): not available for this model (only conditional "
                "flows have one)"
            )
        else:
            top = torch.topk(result.class_posterior, 3)
            (best, prob), rest = result.posterior_top, []
            for v, i in zip(top.values[1:], top.indices[1:], strict=True):
                rest.append(f"{core.label_text(loaded, int(i))}: {float(v):.3f}")
            lines.append(
                f"- the model's own p(y | x): **{core.label_text(loaded, best)}** p={prob:.3f} "
                f"(then {', '.join(rest)})"
            )
        if result.reconstruction is None:
            lines.append("- reconstruction: not available for this model (no encoder)")
            picture = core.grid_image(x)
        else:
            lines.append(
                f"- encode -> decode: largest pixel difference {result.max_reconstruction_error}"
            )
            picture = core.grid_image(torch.cat([x, result.reconstruction]), nrow=1)
        return picture, "\n".join(lines)

    def score_drawing(self, choice, run, drawing, label):
        loaded = self._model(choice, run)
        core.check_drawable(loaded)
        return self._score(loaded, core.image_from_drawing(drawing), label)

    def score_upload(self, choice, run, upload, label):
        loaded = self._model(choice, run)
        x = core.image_from_array(upload, loaded.image_shape, loaded.an_item)
        return self._score(loaded, x, label)

    def choices(self, models: Sequence[str]) -> list[tuple[str, str]]:
        """The model list: each name with its data ("run (CIFAR-10 pairs)")."""
        out = []
        for name in models:
            try:
                out.append((self.cache.get(name).choice_label(), name))
            except core.AppInputError:  # shown by describe() when chosen
                out.append((name, name))
        return out


EXPLORE_MODES = ("two test pairs", "two labels")


def _mode_fields(mode: str):
    """Show the fields of Explore's chosen mode: (test pair row, label row)."""
    pairs = mode != EXPLORE_MODES[1]
    return gr.update(visible=pairs), gr.update(visible=not pairs)


def _temperature_box(label: str, elem_id: str, value: float = 0.7) -> gr.Number:
    """A temperature field that passes what is typed on unchanged, so a value outside the
    range is refused with a message in the page (a slider would clamp it without a word)."""
    lo, hi = core.TEMPERATURE_RANGE
    return gr.Number(value, step=0.05, label=f"{label} ({lo}..{hi})", elem_id=elem_id)


def _follow_temperature(h, choice, run, pair, box, first: float) -> None:
    """Move ``box`` to the sampling default of the chosen model and ``pair`` whenever either
    changes (:meth:`_Handlers.follow_temperature`), remembering the default last shown."""
    shown_default = gr.State(first)
    for widget in (pair, choice, run):
        widget.change(h.follow_temperature, [choice, run, pair, shown_default],
                      [box, shown_default])  # fmt: skip


def _blank_canvas() -> dict:
    black = np.zeros((28 * CANVAS_SCALE, 56 * CANVAS_SCALE, 3), dtype=np.uint8)
    return {"background": black, "layers": [], "composite": black}


def build_app(
    models: Sequence[str],
    data_dir: str | None = None,
    download_dir: str | Path | None = None,
    cache: core.ModelCache | None = None,
) -> gr.Blocks:
    """The page: a model choice and the Generate, Explore and Score tabs.

    Arguments:
        models: names in the model list (shipped names and run folders); the first is chosen.
        data_dir: data root for Explore's test pairs, each model's own dataset's test split
            (default: $PAIRFLOW_DATA, ./data).
        download_dir: where generated PNG/.npz files go (default: a new temporary folder).
        cache: models already loaded (``pairflow app`` loads its ``--model`` list first).
    """
    folder = Path(download_dir or tempfile.mkdtemp(prefix="pairflow-app-"))
    folder.mkdir(parents=True, exist_ok=True)
    h = _Handlers(data_dir, folder, cache)
    with gr.Blocks(title="pairflow", analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            choice = gr.Dropdown(
                h.choices(models), value=models[0] if models else None, label="model"
            )
            run = gr.Textbox(
                label="or a run folder / checkpoint (overrides the list)", elem_id="run"
            )
        info = gr.Markdown(h.describe(models[0], "") if models else "", elem_id="model-info")
        for widget in (choice, run):
            widget.change(h.describe, [choice, run], info)

        with gr.Tab("Generate"):
            with gr.Row():
                pair = gr.Textbox("37", label="pair (00..99, or any)", elem_id="gen-pair")
                # the first model's default for its first pair (a shipped model's own)
                first = h.follow_temperature(models[0], "", "37", 0.7)[1] if models else 0.7
                temperature = _temperature_box("temperature", "gen-temperature", first)
                seed = gr.Number(0, precision=0, label="seed", elem_id="gen-seed")
                count = gr.Slider(1, core.MAX_COUNT, 16, step=1, label="count")
            # Classifier-free guidance, for models trained with label dropout only.
            lo, hi = core.GUIDANCE_RANGE
            shown, first_w = h.show_guidance(models[0], "", "37") if models else ({}, 0.0)
            guidance = gr.Slider(
                lo, hi, first_w, step=0.05, elem_id="gen-guidance",
                label="guidance (-1: no label, 0: the conditional model, more: closer to it)",
                visible=shown.get("visible", False),
            )  # fmt: skip
            shown_guidance = gr.State(first_w)
            for widget in (pair, choice, run):
                widget.change(h.show_guidance, [choice, run, pair, shown_guidance],
                              [guidance, shown_guidance])  # fmt: skip
            # the slider follows the CLI's default for the model and pair (0.8 label-free,
            # a shipped model's own where its sweep chose one)
            _follow_temperature(h, choice, run, pair, temperature, first)
            go = gr.Button("Generate", variant="primary", elem_id="gen-button")
            message = gr.Markdown(elem_id="gen-message")
            grid = gr.Image(
                label="samples",
                format="png",
                interactive=False,
                buttons=BUTTONS,
                elem_id="gen-grid",
            )
            with gr.Row():
                png = gr.DownloadButton("Download PNG", interactive=False, elem_id="gen-png")
                npz = gr.DownloadButton("Download .npz", interactive=False, elem_id="gen-npz")
            go.click(
                _safe(4)(h.generate),
                [choice, run, pair, temperature, seed, count, guidance],
                [grid, png, npz, message],
            )

        with gr.Tab("Explore"):
            mode = gr.Radio(
                list(EXPLORE_MODES), value=EXPLORE_MODES[0], label="between", elem_id="exp-mode"
            )
            # Only the chosen mode's fields show; the other row keeps its values, unused.
            with gr.Row(elem_id="exp-test-pairs") as test_pair_fields:
                index_a = gr.Number(0, precision=0, label="test pair A (index)", elem_id="exp-a")
                index_b = gr.Number(1, precision=0, label="test pair B (index)", elem_id="exp-b")
            with gr.Row(visible=False, elem_id="exp-labels") as label_fields:
                pair_a = gr.Textbox("37", label="label A", elem_id="exp-label-a")
                pair_b = gr.Textbox("80", label="label B", elem_id="exp-label-b")
                # its first label's default, as Generate's: both draw with a label (37)
                exp_temperature = _temperature_box("temperature", "exp-temperature", first)
                exp_seed = gr.Number(0, precision=0, label="seed", elem_id="exp-seed")
            mode.change(_mode_fields, mode, [test_pair_fields, label_fields])
            # the box follows the model's default for label A, as Generate's slider does
            _follow_temperature(h, choice, run, pair_a, exp_temperature, first)
            steps = gr.Slider(2, core.MAX_STEPS, 10, step=1, label="steps", elem_id="exp-steps")
            explore = gr.Button("Interpolate", variant="primary", elem_id="exp-button")
            exp_message = gr.Markdown(elem_id="exp-message")
            strip = gr.Image(
                label="latent path",
                format="png",
                interactive=False,
                buttons=BUTTONS,
                elem_id="exp-strip",
            )
            explore.click(
                _safe(2)(h.explore),
                [
                    choice,
                    run,
                    mode,
                    index_a,
                    index_b,
                    pair_a,
                    pair_b,
                    steps,
                    exp_temperature,
                    exp_seed,
                ],
                [strip, exp_message],
            )

        with gr.Tab("Score"):
            gr.Markdown(
                "Draw white digits (or clothes) on the black 28x56 canvas (shown 10x; "
                "1-channel pair models: MNIST, Fashion-MNIST), or upload an image of the "
                "model's size (28x56 grayscale, 32x64 colour for CIFAR-10). For a conditional "
                "model the bits/dim is -log2 p(x | label) / D (D = C x H x W: 1568 for 28x56), "
                "with the label you give, else the dataset classifier's reading, else the "
                "model's own most probable label. A conditional flow also shows its own "
                "p(y | x) (one pass per label for most flows: about a second)."
            )
            label = gr.Textbox(
                label="condition on pair (blank: the classifier's reading)", elem_id="score-label"
            )
            with gr.Row():
                with gr.Column():
                    canvas = gr.Sketchpad(
                        value=_blank_canvas(),
                        type="numpy",
                        image_mode="RGB",
                        canvas_size=(56 * CANVAS_SCALE, 28 * CANVAS_SCALE),
                        fixed_canvas=True,
                        brush=gr.Brush(default_size=16, colors=["#ffffff"], color_mode="fixed"),
                        label="draw a pair",
                        elem_id="score-canvas",
                    )
                    score_draw = gr.Button("Score the drawing", elem_id="score-draw-button")
                with gr.Column():
                    upload = gr.Image(
                        type="numpy",
                        image_mode=None,
                        sources=["upload"],
                        label="or upload a pair",
                        height=UPLOAD_HEIGHT,  # the box keeps its size for a 28x56 picture
                        elem_id="score-upload",
                    )
                    score_upload = gr.Button("Score the upload", elem_id="score-upload-button")
            score_message = gr.Markdown(elem_id="score-result")
            picture = gr.Image(
                label="the pair (top) and decode(encode(pair)) (below)",
                format="png",
                interactive=False,
                buttons=BUTTONS,
                elem_id="score-picture",
            )
            score_draw.click(
                _safe(2)(h.score_drawing), [choice, run, canvas, label], [picture, score_message]
            )
            score_upload.click(
                _safe(2)(h.score_upload), [choice, run, upload, label], [picture, score_message]
            )
    return app


def launch(
    models: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    data_dir: str | None = None,
    cache: core.ModelCache | None = None,
) -> None:
    """Build the page and serve it until interrupted (blocks).

    gradio is quiet (its console hints, such as setting ``share=True``, speak of its Python
    API, which a user of ``pairflow app`` does not call); the address is printed here.
    """
    with tempfile.TemporaryDirectory(prefix="pairflow-app-") as downloads:
        app = build_app(models, data_dir, downloads, cache=cache)
        app.queue(default_concurrency_limit=1)  # one model call at a time on the CPU
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            show_error=False,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            footer_links=[],
            theme=gr.themes.Default(),  # local fonts only (no web-font requests)
            css=CSS,
            quiet=True,
            prevent_thread_lock=True,
        )
        print(f"pairflow app: serving on {app.local_url} (Ctrl+C stops it)", flush=True)
        app.block_thread()

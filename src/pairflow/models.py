"""The model contract: what the training loop, the commands and the app may call on a model.

Every model kind is one row of :data:`REGISTRY`: its config dataclass, its builder, its
presets, the capabilities it declares, and what only the kind knows: its preparation before
training (:meth:`KindSpec.prepare`), its checkpoint migrations, what a fine-tune keeps from
its source, and what its bits/dim is in a report. The row is the only place that names a
kind: the loop and the commands ask the row, never the model (no ``hasattr``), and never
compare a kind's name. A kind that declares ``likelihood="exact"`` is a
:class:`LikelihoodModel`, ``encodes=True`` an :class:`Autoencoding` one, ``own_update=True``
a :class:`SelfUpdating` one. ``tests/test_models.py`` checks each row's models against the
protocols it declares.

Adding a model kind touches this table and the model's own module only (see
``docs/architecture.md``).

Example:
    >>> spec = kind_spec("flow")
    >>> spec.config_class.__name__, spec.default_preset, spec.likelihood
    ('FlowConfig', 'multiscale', 'exact')
    >>> model = build_model("flow", {"preset": "seed", "arch": "mlp", "hidden_features": 8})
    >>> isinstance(model, LikelihoodModel)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pairflow.options import ModelKind, check_choice

if TYPE_CHECKING:  # importing the contract costs no torch import (the CLI's --help stays fast)
    import torch
    from torch import Tensor

__all__ = [
    "GenerativeModel",
    "LikelihoodModel",
    "Autoencoding",
    "SelfUpdating",
    "PairClassifier",
    "has_label_mixture",
    "has_label_prior",
    "DataInitialised",
    "Dequantized",
    "Preparation",
    "KindSpec",
    "REGISTRY",
    "kind_spec",
    "kind_of",
    "build_model",
]


# ---------------------------------------------------------------------- protocols
@runtime_checkable
class GenerativeModel(Protocol):
    """Any pairflow model: it draws uint8 images and knows its config and device.

    ``cond`` is the label, (B,) int64 (or one int): the pair label 0..99, or for a flow of
    single images (``config.layout="single"``) the class 0..9, for conditional
    models only; images are uint8 pixels 0..255, or float images in [0, 1] (levels k / 255).
    """

    config: Any

    @property
    def device(self) -> torch.device: ...

    def sample(
        self,
        sample_shape: Any = ...,
        cond: Tensor | int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """uint8 images (n, C, H, W) at temperature T."""
        ...


@runtime_checkable
class LikelihoodModel(GenerativeModel, Protocol):
    """A model with a likelihood: exact (flows) or a bound (``bits_per_dim_is_bound``: VAE)."""

    bits_per_dim_is_bound: bool

    def log_prob(
        self, x: Tensor, cond: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """log p(x) (B,) in nats (or its lower bound)."""
        ...

    def bits_per_dim(
        self, x: Tensor, cond: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Bits per dimension (B,) on the 256-level scale (or its upper bound)."""
        ...

    def log_weight(
        self, x: Tensor, cond: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """One importance weight log w (B,) in nats of the 256-level probability P(x):
        E[w] = P(x), E[log w] = -D ln 2 * the bits/dim above (Burda et al. 2016)."""
        ...


@runtime_checkable
class Autoencoding(Protocol):
    """A model that maps images to latents and back (flows exactly, the VAE approximately)."""

    def encode(self, x: Tensor, cond: Tensor | int | None = None) -> Tensor: ...

    def decode(self, z: Tensor, cond: Tensor | int | None = None) -> Tensor: ...


@runtime_checkable
class PairClassifier(Protocol):
    """A model that carries a prior p(y) over its labels (a conditional flow; pairs or singles).

    A conditional instance samples without a label (``sample_labels``: y ~ p(y) first), its
    ``log_prob(x)`` without a label is marginal over the labels, and ``class_posterior(x)``
    (B, K) gives p(y | x) by Bayes (``classify``: the argmax; K = 100 pair labels, or 10
    classes of single images). ``label_passes`` is what that costs in passes through the
    model: 1 for a class mixture (``label_mixture``), whose body never sees the label, K where
    the couplings read it.
    """

    @property
    def label_mixture(self) -> bool: ...

    @property
    def label_passes(self) -> int: ...

    def log_label_probs(self) -> Tensor: ...

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def class_posterior(self, x: Tensor) -> Tensor: ...

    def classify(self, x: Tensor) -> Tensor: ...


def has_label_mixture(model: Any) -> bool:
    """Whether ``model`` is a :class:`PairClassifier` with a label mixture in use."""
    return isinstance(model, PairClassifier) and bool(model.label_mixture)


def has_label_prior(model: Any) -> bool:
    """Whether ``model`` is a conditional :class:`PairClassifier`: it has p(y) to draw from.

    A flow that reads its own clusters has a p(c) too, but its labels are clusters, not the
    data's: it is no conditional model to its users."""
    conditional = bool(getattr(getattr(model, "config", None), "conditional", False))
    return isinstance(model, PairClassifier) and conditional and model.label_passes > 0


@runtime_checkable
class SelfUpdating(Protocol):
    """A model that owns its update (the GAN: two optimisers, alternating steps).

    The loop calls ``make_optimizers`` once and ``train_step`` for every batch in place of its
    own step; without a likelihood the model also reports its own test numbers.
    """

    def make_optimizers(self, config: Any) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(
        self,
        x: Tensor,
        cond: Tensor | None,
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator | None,
        grad_clip: float | None,
    ) -> dict[str, Tensor]:
        """One update; returns at least ``loss`` and ``grad_norm``."""
        ...

    def test_metrics(
        self, dataset: Any, device: torch.device, conditional: bool, batch_size: int = ...
    ) -> dict[str, float]: ...


@runtime_checkable
class DataInitialised(Protocol):
    """A model with data-dependent initialisation (ActNorm), run before distributed wrapping."""

    def data_init(self, x: Tensor, cond: Tensor | None = None) -> None: ...


@runtime_checkable
class Dequantized(Protocol):
    """A likelihood model of dequantized pixels that can be scored with uniform noise instead
    of its own (a flow trained with variational dequantization: its exact continuous
    likelihood, RealNVP and Glow's convention)."""

    def with_uniform_dequantization(self) -> Any: ...


# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Preparation:
    """What a kind's preparation before training reads (:meth:`KindSpec.prepare`).

    A new run and a fine-tune (``--init-from``) are prepared; a resumed run is not (its
    checkpoint holds everything).

    Arguments:
        train_set: the training pairs (``get_batch``, ``pair_label_counts``, ``len``).
        loader: this rank's loader of them (``set_epoch``, iteration).
        device: where the model is.
        world_size: how many ranks train (1: one process).
        init_from: the checkpoint (or run folder) a fine-tune starts from; None: a new run.
        new_weights: the model's parameters and buffers the ``init_from`` checkpoint did not
            hold (they keep their initialisation).
        left_out: the checkpoint's weights the model left out (:attr:`KindSpec.left_out`).
        inherited: the config fields kept from the ``init_from`` checkpoint
            (:attr:`KindSpec.inherited_fields`).
    """

    train_set: Any
    loader: Any
    device: Any
    world_size: int = 1
    init_from: str | None = None
    new_weights: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    inherited: dict[str, Any] = field(default_factory=dict)


def _no_preparation(model: Any, preparation: Preparation) -> list[str]:
    return []


@dataclass(frozen=True)
class KindSpec:
    """One model kind: how to build it, what it can do, and what only it knows.

    Arguments:
        name: the kind's name (``--model``).
        config_class: its config dataclass (from a preset: ``config_class.from_preset``).
        build: config -> untrained model.
        default_preset: the preset ``pairflow train --model NAME`` uses.
        likelihood: ``"exact"``, ``"bound"`` (an ELBO) or None (no likelihood: GAN).
        encodes: the model is :class:`Autoencoding`.
        classifies: the model is a :class:`PairClassifier` (its config chooses whether it
            carries a label mixture).
        own_update: the model is :class:`SelfUpdating` (the loop calls its ``train_step``).
        data_init: the model is :class:`DataInitialised`.
        distributed: the kind trains under ``torchrun`` (DistributedDataParallel).
        dequantized: the model is :class:`Dequantized` (``evaluate --dequantization uniform``).
        conditions: the kind has a conditional version (its config's ``conditional``).
        precisions: its networks compute in fp32 or bf16 (its config's ``precision``).
        layouts: it models pairs or single images (its config's ``layout``).
        draws: what its bits/dim's draws average over: ``"dequantization"`` noise (flows)
            or ``"latent"`` draws (the VAE's bound); the report's ``{draws}_draws``.
        preparation: (model, :class:`Preparation`) -> lines to print: what the kind does
            to a new or fine-tuned model before its first step (:meth:`prepare`).
        migrations: functions bringing the kind's checkpoints of older formats up to date,
            in place and in order (each leaves a checkpoint it does not apply to alone).
        inherited_fields: (source model config, ``--set`` overrides, conditional) -> the
            config fields a fine-tune keeps from its source checkpoint; None: none.
        left_out: (source weights, model, source model config) -> the source's weights a
            fine-tuned model leaves out; None: none (every weight must fit).
        widen: (source weights, model, source model config) -> the names of the source's
            weights it extends in place to the model's larger shapes (a conditioner that now
            reads a label); None: none.
        likelihood_facts: model -> the report fields saying what its bits/dim is (exact or
            which bound, of which data); None: nothing beyond ``likelihood``.
    """

    name: str
    config_class: type
    build: Callable[[Any], torch.nn.Module]
    default_preset: str
    likelihood: Literal["exact", "bound"] | None
    encodes: bool = False
    classifies: bool = False
    own_update: bool = False
    data_init: bool = False
    distributed: bool = True
    dequantized: bool = False
    conditions: bool = True
    precisions: bool = True
    layouts: bool = True
    draws: Literal["dequantization", "latent"] = "dequantization"
    preparation: Callable[[Any, Preparation], list[str]] = _no_preparation
    migrations: tuple[Callable[[dict], None], ...] = ()
    inherited_fields: Callable[[dict, dict, bool], dict] | None = None
    left_out: Callable[[dict, Any, dict], list[str]] | None = None
    widen: Callable[[dict, Any, dict], list[str]] | None = None
    likelihood_facts: Callable[[Any], dict[str, Any]] | None = None

    @property
    def presets(self) -> tuple[str, ...]:
        return tuple(self.config_class.PRESETS)

    @property
    def bpd_key(self) -> str | None:
        """The name its bits/dim goes by in logs: ``bpd``, ``bpd_bound`` or None."""
        return {"exact": "bpd", "bound": "bpd_bound", None: None}[self.likelihood]

    def protocols(self) -> list[type]:
        """The protocols this kind's models declare they satisfy."""
        declared = [LikelihoodModel if self.likelihood else GenerativeModel]
        declared += [Autoencoding] if self.encodes else []
        declared += [PairClassifier] if self.classifies else []
        declared += [SelfUpdating] if self.own_update else []
        declared += [DataInitialised] if self.data_init else []
        declared += [Dequantized] if self.dequantized else []
        return declared

    def prepare(self, model: torch.nn.Module, preparation: Preparation) -> list[str]:
        """Make a new or fine-tuned ``model`` ready for its first step (label frequencies,
        priors fitted to the data, data-dependent initialisation): the lines to print."""
        return list(self.preparation(model, preparation))

    def upgrade(self, state: dict) -> dict:
        """Bring checkpoint dict ``state`` of this kind up to date, in place; returns it."""
        for migration in self.migrations:
            migration(state)
        return state

    def inherited(self, source: dict, overrides: dict, conditional: bool) -> dict[str, Any]:
        """The config fields a fine-tune from a checkpoint of model config ``source`` keeps."""
        if self.inherited_fields is None:
            return {}
        return self.inherited_fields(source, overrides, conditional)

    def weights_left_out(self, weights: dict, model: torch.nn.Module, source: dict) -> list[str]:
        """The names of a source checkpoint's ``weights`` that fine-tuning ``model`` leaves
        out (``source``: the checkpoint's model config)."""
        return [] if self.left_out is None else self.left_out(weights, model, source)

    def widen_weights(self, weights: dict, model: torch.nn.Module, source: dict) -> list[str]:
        """Extend a source checkpoint's ``weights`` in place where fine-tuning ``model``
        widens them (``source``: the checkpoint's model config); the names widened."""
        return [] if self.widen is None else self.widen(weights, model, source)

    def facts(self, model: torch.nn.Module) -> dict[str, Any]:
        """The report fields that say what ``model``'s bits/dim is ({} if nothing to add)."""
        return {} if self.likelihood_facts is None else self.likelihood_facts(model)


def _flow_spec() -> KindSpec:
    from pairflow.flows import FlowConfig, PairFlow, migrations, prepare, report

    # "exact" with uniform dequantization; a flow with variational dequantization reports a
    # bound, which the model itself says (``bits_per_dim_is_bound``, part of LikelihoodModel).
    return KindSpec(
        "flow", FlowConfig, PairFlow, "multiscale", "exact", encodes=True, classifies=True,
        data_init=True, dequantized=True, preparation=prepare.prepare,
        migrations=migrations.MIGRATIONS, inherited_fields=prepare.inherited_fields,
        left_out=prepare.left_out, widen=prepare.widen,
        likelihood_facts=report.likelihood_facts,
    )  # fmt: skip


def _vae_spec() -> KindSpec:
    from pairflow.baselines import PairVAE, VAEConfig

    return KindSpec("vae", VAEConfig, PairVAE, "conv", "bound", encodes=True, draws="latent")


def _gan_spec() -> KindSpec:
    from pairflow.baselines import GANConfig, PairGAN

    return KindSpec("gan", GANConfig, PairGAN, "dcgan", None, own_update=True, distributed=False)


REGISTRY: dict[str, Callable[[], KindSpec]] = {
    "flow": _flow_spec,
    "vae": _vae_spec,
    "gan": _gan_spec,
}
"""Kind name -> a function giving its :class:`KindSpec` (imports the model on first use)."""


def kind_spec(kind: ModelKind | str) -> KindSpec:
    """The :class:`KindSpec` of ``kind``; unknown kinds raise listing the valid ones."""
    check_choice("model kind", kind, tuple(REGISTRY))
    return REGISTRY[kind]()


def kind_of(model: torch.nn.Module) -> KindSpec:
    """The :class:`KindSpec` whose builder made ``model`` (by its class)."""
    for name in REGISTRY:
        spec = kind_spec(name)
        if isinstance(spec.build, type) and isinstance(model, spec.build):
            return spec
    raise TypeError(f"{type(model).__name__} is not a registered pairflow model kind")


def build_model(kind: ModelKind | str, model_config: dict[str, Any] | Any) -> torch.nn.Module:
    """An untrained model of ``kind`` from its config (a dataclass or its dict)."""
    spec = kind_spec(kind)
    if isinstance(model_config, dict):
        model_config = spec.config_class.from_dict(model_config)
    return spec.build(model_config)


def __getattr__(name: str) -> Any:
    # pairflow.models.load and load_with_checkpoint, the loaders' former home, stay
    # importable for code written against them; loading lives a layer up (it reads
    # checkpoints, which build models through this registry).
    if name in ("load", "load_with_checkpoint"):
        from pairflow import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'pairflow.models' has no attribute {name!r}")

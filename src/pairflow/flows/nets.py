"""Conditioner networks for coupling layers: MLPs for vectors, residual CNNs for images.

Every net here has the signature ``net(h, context=None)``, where ``context`` is the label
embedding (B, S, E) of a conditional flow: for pairs S = 2 (left digit's vector, right
digit's vector), for single images S = 1 (the class's vector), and
starts with a zero last layer so its coupling starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "SeparateMLPs", "ConvResNet", "WNConv2d", "label_context_map"]


class MLP(nn.Module):
    """Fully connected net with LeakyReLU hidden layers and a zero-initialised output layer.

    Arguments:
        in_features: input size.
        out_features: output size.
        hidden: hidden layer width.
        num_hidden_layers: number of hidden layers.
        context_features: size of the flattened context appended to the input (0: none).

    Example:
        >>> MLP(3, 4, hidden=8)(torch.randn(2, 3)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 512,
        num_hidden_layers: int = 2,
        context_features: int = 0,
    ):
        super().__init__()
        sizes = [in_features + context_features] + [hidden] * num_hidden_layers
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.LeakyReLU()]
        last = nn.Linear(sizes[-1], out_features)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.layers = nn.Sequential(*layers, last)
        self.context_features = context_features

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_features:
            h = torch.cat([h, context.flatten(1).to(h.dtype)], dim=1)
        return self.layers(h)


class SeparateMLPs(nn.Module):
    """K independent MLPs on the same input, evaluated in one batched matmul per layer.

    RealNVP's scale and translation networks are separate MLPs (K = 2) with their own
    weights; stacking the weights as (K, in, out) and using ``baddbmm`` computes both in one
    call instead of two, which is faster on CPUs. The output is the K outputs concatenated
    along the features: (B, K * out_features_per_net), scale net first.

    Arguments:
        in_features: input size.
        out_features: total output size, K times each net's output.
        hidden: hidden width of each net.
        num_hidden_layers: hidden layers of each net.
        num_nets: K.
        context_features: size of the flattened context appended to the input (0: none).

    Example:
        >>> SeparateMLPs(3, 4, hidden=8)(torch.randn(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 512,
        num_hidden_layers: int = 2,
        num_nets: int = 2,
        context_features: int = 0,
    ):
        super().__init__()
        if out_features % num_nets:
            raise ValueError(f"out_features {out_features} not divisible by {num_nets} nets")
        sizes = [in_features + context_features] + [hidden] * num_hidden_layers
        sizes.append(out_features // num_nets)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1 / math.sqrt(a)  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(torch.empty(num_nets, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_nets, 1, b).uniform_(-bound, bound)))
        nn.init.zeros_(self.weights[-1])
        nn.init.zeros_(self.biases[-1])
        self.num_nets = num_nets
        self.context_features = context_features

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_features:
            h = torch.cat([h, context.flatten(1).to(h.dtype)], dim=1)
        h = h.unsqueeze(0).expand(self.num_nets, *h.shape)  # (K, B, in)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.leaky_relu(h)
        return h.transpose(0, 1).reshape(h.shape[1], -1)  # (B, K * out)


class WNConv2d(nn.Conv2d):
    """Conv2d with weight normalisation, w = g v / ||v|| per output channel.

    Unlike batch normalisation it behaves the same in train and eval mode.

    References:
        Salimans and Kingma, "Weight normalization", NeurIPS 2016.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.gain = nn.Parameter(self.weight.detach().flatten(1).norm(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        norm = self.weight.flatten(1).norm(dim=1)
        w = self.weight * (self.gain / norm).view(-1, 1, 1, 1)
        return F.conv2d(x, w, self.bias, padding=self.padding)


def label_context_map(context: Tensor, height: int, width: int) -> Tensor:
    """Spread a label embedding over an image, each side's vector over its strip of columns.

    A pair's (S = 2) left digit's vector goes on the left half, the right digit's on the right
    half; a single image's (S = 1) class vector goes everywhere. Squeezes, masks and
    factor-outs keep columns in place, so at every scale the left half of the feature map is
    the left digit; this lets the left label steer the left half.

    Arguments:
        context: (B, S, E) embeddings, one per side (left first).
        height, width: the feature map size.

    Returns:
        (B, E, height, width).
    """
    if context.shape[1] == 1:  # one image: its class everywhere
        return context[:, 0, :, None, None].expand(-1, -1, height, width)
    left = (torch.arange(width, device=context.device) + 0.5 < width / 2).to(context.dtype)
    side = torch.stack([left, 1 - left])  # (2, W)
    spread = torch.einsum("bse,sw->bew", context, side)  # (B, E, W)
    return spread.unsqueeze(2).expand(-1, -1, height, -1)


class ConvResNet(nn.Module):
    """Residual CNN conditioner: 3x3 conv in, pre-activation residual blocks, zero 3x3 conv out.

    Hidden convolutions are weight-normalised; the output convolution starts at zero.

    Arguments:
        in_channels: input channels.
        out_channels: output channels.
        hidden: hidden channels.
        num_blocks: residual blocks (two 3x3 convolutions each).
        context_features: embedding size E of the label context (0: unconditional); it enters
            as E extra input channels via :func:`label_context_map`.
        channels_last: run the convolutions in channels-last memory format (weights and
            activations), which oneDNN executes faster on CPUs (about 1.25x for a train step
            of the ``multiscale`` preset here, bf16); the output is returned contiguous.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017, sec. 4.1.
        He et al., "Identity mappings in deep residual networks", ECCV 2016.

    Example:
        >>> ConvResNet(2, 4, hidden=8)(torch.randn(3, 2, 4, 8)).shape
        torch.Size([3, 4, 4, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        num_blocks: int = 2,
        context_features: int = 0,
        channels_last: bool = True,
    ):
        super().__init__()
        self.context_features = context_features
        self.channels_last = channels_last
        self.conv_in = WNConv2d(in_channels + context_features, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleList([WNConv2d(hidden, hidden), WNConv2d(hidden, hidden)])
            for _ in range(num_blocks)
        )
        self.conv_out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_features:
            ctx = label_context_map(context.to(h.dtype), h.shape[2], h.shape[3])
            h = torch.cat([h, ctx], dim=1)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(h)
        for conv1, conv2 in self.blocks:
            h = h + conv2(F.relu(conv1(F.relu(h))))
        return self.conv_out(F.relu(h)).contiguous()

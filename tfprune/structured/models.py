"""Small reference architectures for 32x32 inputs (CIFAR style), used by tests and benchmarks.

Example:
    >>> model = resnet_cifar(depth=56)                 # 0.85M parameters, 125M MACs
    >>> nin = network_in_network(grouped=4)            # grouped 1x1 convs + channel shuffle
"""

from __future__ import annotations

import keras
from keras import layers


def _conv_bn_relu(x, filters, kernel, strides=1, groups=1, name=None, relu=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, groups=groups,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet_cifar(depth: int = 56, num_classes: int = 10, input_shape=(32, 32, 3)) -> keras.Model:
    """ResNet for CIFAR (He et al. 2016): 3 stages of (depth-2)/6 basic blocks with 16/32/64
    filters; projection (1x1 conv + BN) shortcuts where the shape changes."""
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110), received {depth}.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, 16, 3, name="stem")
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            name = f"s{stage + 1}b{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = _conv_bn_relu(x, filters, 3, strides, name=f"{name}_1")
            y = _conv_bn_relu(y, filters, 3, name=f"{name}_2", relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = _conv_bn_relu(shortcut, filters, 1, strides, name=f"{name}_proj", relu=False)
            x = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}_cifar")


def channel_shuffle(x, groups: int, name: str):
    """ShuffleNet channel shuffle: Reshape (H, W, g, C/g) -> Permute -> Reshape (H, W, C)."""
    h, w, c = x.shape[1:]
    x = layers.Reshape((h, w, groups, c // groups), name=f"{name}_split")(x)
    x = layers.Permute((1, 2, 4, 3), name=f"{name}_permute")(x)
    return layers.Reshape((h, w, c), name=f"{name}_merge")(x)


def network_in_network(num_classes: int = 10, grouped: int = 1, input_shape=(32, 32, 3)) -> keras.Model:
    """Network in Network (Lin et al. 2014) for 32x32 inputs, each conv followed by BN and ReLU.

    With `grouped=g > 1`, the 1x1 convolutions inside each block use `groups=g`, with a channel
    shuffle between consecutive grouped convolutions.
    """
    spec = [
        [(192, 5), (160, 1), (96, 1)],
        [(192, 5), (192, 1), (192, 1)],
        [(192, 3), (192, 1), (num_classes, 1)],
    ]
    inputs = keras.Input(input_shape)
    x = inputs
    for b, block in enumerate(spec):
        for i, (filters, kernel) in enumerate(block):
            name = f"b{b + 1}c{i + 1}"
            groups = grouped if grouped > 1 and kernel == 1 and filters % grouped == 0 else 1
            x = _conv_bn_relu(x, filters, kernel, groups=groups, name=name)
            if groups > 1 and i + 1 < len(block) and block[i + 1][0] % grouped == 0:
                x = channel_shuffle(x, grouped, name=f"{name}_shuffle")
        if b < 2:
            x = layers.MaxPooling2D(3, 2, padding="same", name=f"pool{b + 1}")(x)
    outputs = layers.GlobalAveragePooling2D(name="gap")(x)
    suffix = f"_g{grouped}" if grouped > 1 else ""
    return keras.Model(inputs, outputs, name=f"nin{suffix}")

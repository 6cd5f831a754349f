"""The preset deflate dictionary of the .nrz spec (format version 2, flag bit 1).

An .nrz spec is a few hundred bytes of JSON that repeat the same keys in every file
("architecture", "padding_mode", "Conv2d" ...). Deflate cannot find repeats in so short a text,
but it can refer back into a dictionary both sides already hold (zlib's ``zdict``, RFC 1950
FDICT): the LeNet-5 spec went from 375 to about 190 bytes this way.

THE BYTES BELOW ARE PART OF THE FILE FORMAT. Changing them makes every file written with flag
bit 1 unreadable: a new dictionary needs a new flag bit (or format version), and this one stays.
Deflate codes nearer matches with fewer bits, so the most frequent fragments come last.
"""

from __future__ import annotations

import zlib

_FRAGMENTS = (
    # generic layer types and arguments (keys appear sorted: the writer dumps with sort_keys)
    '"LeakyReLU"{"args":{"inplace":false,"negative_slope":0.01}"Sigmoid""Tanh""Dropout"{"args":{"inplace":false,"p":0.5}',
    '"AdaptiveAvgPool2d"{"args":{"output_size":[1,1]}"AvgPool2d""MaxPool2d"{"args":{"ceil_mode":false,"count_include_pad":true,',
    '"Flatten"{"args":{"end_dim":-1,"start_dim":1}"PadShortcut""ZeroBranch""Identity""Sequential""ReLU6"{"args":{"inplace":false},"type":"ReLU"}',
    '{"args":{"affine":true,"eps":1e-05,"momentum":0.1,"num_features":,"track_running_stats":true},"type":"BatchNorm2d"},"',
    '"graph":{"nodes":[{"args":["op":"call_module","call_function","placeholder","output","target":"kind":"graph"',
    '"resnet20""resnet32""resnet56""resnet18""vgg11""vgg16""mobilenetv2""shortcut":"projection""classifier":"linear"',
    '"input_shape":[3,32,32],"num_classes":100,"in_channels":3,"input_size":[32,32]"layer1.0.branch.conv1"',
    # what pack writes for a quantised model
    '"quantisation":{"bias_bits":{"fc1":},"bits":{"conv1":,"conv2":,"fc1":,"fc2":,"fc3":},"method":"kmeans","per_channel":false}}',
    '"quantisation":null}"model":{"kwargs":{"name":',
    # surgery's zoo-kind architecture of a gated/pruned LeNet (the common case)
    '{"args":{"bias":true,"in_features":,"out_features":},"type":"InputSelectLinear"},"fc2":',
    '"stride":[1,1]},"type":"Conv2d"},"conv2":{"args":{"bias":true,"dilation":[1,1],"groups":1,"in_channels":',
    '"padding":[1,1],"padding_mode":"zeros","stride":[1,1]},"type":"Conv2d"},"',
    ',"kernel_size":[3,3],"out_channels":',
    '{"architecture":{"changed":{"conv1":{"args":{"bias":true,"dilation":[1,1],"groups":1,"in_channels":1,"kernel_size":[5,5],"out_channels":',
    ',"padding":[0,0],"padding_mode":"zeros","stride":[1,1]},"type":"Conv2d"},"fc1":{"args":{"bias":true,"in_features":',
    ',"out_features":10},"type":"Linear"}},"format":"netrazor-surgery-model","input_shape":[1,28,28],"kind":"zoo",',
    '"spec":{"kwargs":{"depth_mult":1.0,"in_channels":1,"input_size":[28,28],"num_classes":10,"width_mult":1.0},"name":"lenet300"',
    '"name":"lenet5"},"version":1},"format":"netrazor.nrz","model":null,"quantisation":{"bias_bits":{"fc1":',
)

SPEC_DICTIONARY: bytes = "".join(_FRAGMENTS).encode("utf-8")


def deflate_with_dictionary(data: bytes) -> bytes:
    """zlib stream of ``data`` deflated against :data:`SPEC_DICTIONARY` (level 9)."""
    c = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, SPEC_DICTIONARY)
    return c.compress(data) + c.flush()

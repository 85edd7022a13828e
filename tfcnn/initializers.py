"""Initialisations that need the data or the built model: patch whitening and dirac (identity) kernels.

Both come from airbench (Jordan 2024, arXiv:2404.00498) and work on any tfcnn model: whitening on a
layer named "whiten" (a small valid conv right after the input's normalisation), dirac on every odd
square conv kernel.
"""
import numpy as np

from tfcnn.errors import TfcnnError

WHITEN_LAYER = "whiten"


def whitening_kernel(images, size, eps=5e-4):
    """A (size, size, C, 2 * C * size**2) conv kernel that whitens size x size patches of `images`
    (N, H, W, C float, already normalised): the eigenvectors of the patch covariance scaled by
    1 / sqrt(eigenvalue + eps), largest first, then the same filters negated (airbench's
    init_whitening_conv; the negatives let a following GELU keep both signs)."""
    images = np.asarray(images, np.float64)
    n, h, w, c = images.shape
    patches = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(1, 2))
    # (N, H', W', C, size, size) -> one row per patch, flattened in the kernel's (row, col, channel) order.
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size * size * c)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # columns are filters
    kernel = np.concatenate([filters, -filters], axis=1).reshape(size, size, c, -1)
    return kernel.astype(np.float32)


def whiten_layer(model, flags):
    """`model`'s "whiten" layer (a small conv after the input), or a TfcnnError naming the `flags` that need it."""
    try:
        return model.get_layer(WHITEN_LAYER)
    except ValueError:
        raise TfcnnError(f"{flags} needs a layer named {WHITEN_LAYER!r} (a small conv after the input); {model.name} "
                         f"has none: use an arch that has one (airbench94) or drop {flags}") from None


def init_whitening(model, images, eps=5e-4):
    """Set the kernel of `model`'s "whiten" layer from training images (uint8 or float, 0-255 scale, NHWC),
    normalised the way the model normalises its input. Returns the layer."""
    layer = whiten_layer(model, "--whiten-init")
    kernel = layer.kernel
    size, _, channels, filters = kernel.shape
    if size != kernel.shape[1] or filters != 2 * channels * size * size:
        raise TfcnnError(f"layer {WHITEN_LAYER!r} of {model.name} has a {tuple(kernel.shape)} kernel; whitening needs "
                         f"a square one with 2 x channels x size^2 = {2 * channels * size * size} filters")
    x = np.asarray(images, np.float32)
    try:
        normalize = model.get_layer("normalize")
        x = np.asarray(normalize(x))
    except ValueError:
        pass  # the model takes its input as it is
    kernel.assign(whitening_kernel(x, size, eps))
    return layer


def dirac_init(model, skip=(WHITEN_LAYER,)):
    """airbench's dirac init: in every conv with an odd square kernel, output filter i (i < input channels) becomes
    the identity on input channel i (torch.nn.init.dirac_), the rest keep their random init, so each conv starts
    close to passing its input through. Returns the names of the layers changed."""
    import keras

    changed = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or layer.name in skip or type(layer) is not keras.layers.Conv2D:
            continue
        kernel = np.array(layer.kernel)
        kh, kw, cin, cout = kernel.shape
        if kh != kw or kh % 2 == 0:
            continue
        n = min(cin, cout)
        kernel[:, :, :, :n] = 0
        kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1
        layer.kernel.assign(kernel)
        changed.append(layer.name)
    return changed

"""A short, stable fingerprint of a model's weights, so artifacts can tell which model made them."""

import hashlib

import torch


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer's name, shape, dtype and bytes (16 hex digits).

    Tied weights are hashed once per name, which is stable for a given architecture. Hashing
    135M float32 parameters takes about half a second; converted caches store the result.
    """
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        data = tensor.to("cpu").contiguous()
        if data.dtype == torch.bfloat16:  # numpy has no bfloat16; hash the raw bits
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:16]

"""Bottleneck adapters (Houlsby et al., 2019), small and exact: peft has no such method, and the `adapters`
library (1.3.0) requires transformers ~=4.57, which conflicts with our pin.

Each layer gets two adapters, one after the attention output projection and one after the feed-forward
output projection, before the residual connection and its LayerNorm. An adapter maps h to
h + up(gelu(down(h))), with down: width -> size and up: size -> width, both initialised near zero, so
a new adapter is near the identity and training starts from the pretrained model.

An adapter is attached to the projection it follows, as a child module named `adapter`, and applied by a
forward hook: the pretrained weights keep their names, so the backbone still loads from its checkpoint.
"""

import torch
from torch import nn

from architectures import sublayer_outputs

INIT_STD = 1e-2  # the paper's near-identity initialisation: zero-mean normal, truncated at two std


class Bottleneck(nn.Module):
    def __init__(self, width: int, size: int):
        super().__init__()
        self.down, self.up = nn.Linear(width, size), nn.Linear(size, width)
        for layer in (self.down, self.up):
            nn.init.trunc_normal_(layer.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(hidden)))


def _apply_adapter(projection, inputs, output):
    return projection.adapter(output)


def add_adapters(model, size: int):
    """Inserts the adapters into every layer of the model, in place, and returns it."""
    attention_outputs, ffn_outputs = sublayer_outputs(model)
    for module_name in attention_outputs + ffn_outputs:
        projection = model.get_submodule(module_name)
        projection.adapter = Bottleneck(projection.out_features, size).to(projection.weight.device)
        projection.register_forward_hook(_apply_adapter)
    return model


def adapter_parameters(model) -> set[str]:
    return {name for name, _ in model.named_parameters() if ".adapter." in name}

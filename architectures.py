"""Where an encoder keeps what the tuning methods touch: its head, biases, norms, attention projections and
sublayer outputs, found from the model itself, so that every method works out its settings from the model
it gets rather than from BERT's names.

peft keeps the LoRA and IA3 targets of many model types; where it has them, methods.py uses peft's. The
finders here cover the rest, by the layer names the encoders on the Hub use (tests/test_architectures.py
runs every method on BERT, RoBERTa, DistilBERT, DeBERTa-v2, ELECTRA and ModernBERT).
"""

import inspect

from torch import nn

# The last part of a projection's module name, by role, as the common encoders spell it.
QUERY = ("query", "q_lin", "q_proj", "query_proj")
KEY = ("key", "k_lin", "k_proj", "key_proj")
VALUE = ("value", "v_lin", "v_proj", "value_proj")
FUSED_QKV = ("Wqkv", "qkv", "qkv_proj", "in_proj")  # one projection for query, key and value (ModernBERT)

# (attention output projection, feed-forward output projection), the two sublayer outputs of a layer, each
# followed by the residual connection: BERT and its descendants, DistilBERT, ModernBERT.
SUBLAYER_OUTPUTS = (
    ("attention.output.dense", "output.dense"),
    ("attention.out_lin", "ffn.lin2"),
    ("attn.Wo", "mlp.Wo"),
)


def model_type(model) -> str:
    return getattr(model.config, "model_type", type(model).__name__)


def num_layers(model) -> int:
    return model.config.num_hidden_layers  # DistilBERT's n_layers too, through its config's attribute map


def head_parameters(model) -> set[str]:
    """The task head: every parameter outside the pretrained backbone (BERT's classifier, RoBERTa's two-layer
    head, DistilBERT's pre_classifier and classifier, DeBERTa's pooler...)."""
    backbone = {f"{model.base_model_prefix}.{name}" for name, _ in model.base_model.named_parameters()}
    return {name for name, _ in model.named_parameters()} - backbone


def head_modules(model) -> list[str]:
    """The top-level modules that make up the head, for peft's modules_to_save."""
    backbone = model.base_model_prefix
    children = model.named_children()
    return [name for name, module in children if name != backbone and next(module.parameters(), None) is not None]


def bias_parameters(model) -> set[str]:
    """Every bias term, whatever its module calls it by type: linear layers' and norms' alike."""
    return {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        for name, _ in module.named_parameters(recurse=False)
        if name == "bias"
    }


def is_norm(module) -> bool:
    return isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower()


def norm_parameters(model) -> set[str]:
    return {
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if is_norm(module)
        for name, _ in module.named_parameters(recurse=False)
    }


def _linears(model, names) -> list[str]:
    return [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.split(".")[-1] in names
    ]


def projections(model, *roles) -> list[str]:
    """Full module names of the attention projections in each role (QUERY, KEY, VALUE), or of the fused
    query-key-value projection where the model has one instead. Empty if any role is missing."""
    found = [_linears(model, role) for role in roles]
    if all(found):
        return sorted(name for names in found for name in names)
    return sorted(_linears(model, FUSED_QKV))


def sublayer_outputs(model) -> tuple[list[str], list[str]]:
    """(attention output projections, feed-forward output projections), one of each per layer; empty if the
    model's layers are not spelled like any of SUBLAYER_OUTPUTS."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for attention, feed_forward in SUBLAYER_OUTPUTS:
        attention_outputs = [n for n in linears if n.endswith("." + attention)]
        ffn_outputs = [n for n in linears if n.endswith("." + feed_forward) and not n.endswith("." + attention)]
        if len(attention_outputs) == len(ffn_outputs) == num_layers(model):
            return attention_outputs, ffn_outputs
    return [], []


def embedding_width(model) -> int:
    """The width of the input embeddings, where prompt tuning's virtual tokens go: ELECTRA's are narrower than
    its hidden size."""
    return model.get_input_embeddings().embedding_dim


def takes_past_key_values(model) -> bool:
    """What peft checks before prefix tuning can run: the backbone's forward takes past_key_values."""
    return "past_key_values" in inspect.signature(model.base_model.forward).parameters

"""What a run measures: accuracy (without `evaluate`), trainable parameters and peak GPU memory."""

import numpy as np
import torch


def argmax_logits(logits, labels):
    """Keeps only the predicted class on the device, so evaluation gathers one int per sentence."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def accuracy_metrics(eval_prediction):
    """Accuracy without `evaluate`, whose metric scripts come from the Hub and fail offline."""
    predictions = np.asarray(eval_prediction.predictions).reshape(-1)
    labels = np.asarray(eval_prediction.label_ids).reshape(-1)
    correct = int((predictions == labels).sum())
    return {"accuracy": correct / len(labels), "correct": correct, "total": int(len(labels))}


class ScoredAccuracy:
    """accuracy_metrics, keeping the last predictions it scored. The Trainer's evaluation at a run's last step
    scores the model the run ends with, so the results file can take the dev predictions from it rather than
    evaluate the dev set once more (experiment.final_evaluation)."""

    def __init__(self):
        self.last = None  # the EvalPrediction of this process's latest evaluation

    def __call__(self, eval_prediction):
        self.last = eval_prediction
        return accuracy_metrics(eval_prediction)


def count_parameters(model) -> dict:
    """Trainable and total parameters; a tensor shared between modules counts once."""
    unique = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    total = sum(p.numel() for p in unique)
    return {"trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / total}


def reset_peak_memory():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> dict:
    """Peak CUDA memory since the last reset, in MiB; None on a CPU, where torch does not track it."""
    if not torch.cuda.is_available():
        return {"peak_memory_mb": None, "peak_memory_reserved_mb": None}
    torch.cuda.synchronize()
    return {
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_memory_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }


def held_memory_mb(model, optimizer) -> dict:
    """In MiB: what training holds from one step to the next, the weights and the optimizer's state; and the
    gradients each step makes, one per trained weight of its dtype (counted, not read: the Trainer frees them
    at zero_grad). Peak allocated memory minus the weights and the optimizer's state is what a step allocates
    and frees: its gradients, activations, autocast's copies, workspaces. The peak can come before the
    gradients exist, as the backward begins with every activation still kept."""
    mib = lambda tensors: round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1)  # noqa: E731
    weights = list({id(p): p for p in model.parameters()}.values())
    state = [value for values in optimizer.state.values() for value in values.values() if torch.is_tensor(value)]
    return {
        "weights": mib(weights),
        "gradients": mib(p for p in weights if p.requires_grad),
        "optimizer_state": mib(state),
    }

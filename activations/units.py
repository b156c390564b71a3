"""Hooking the MLP units of a target model, and running forward passes that stop early.

:func:`unit_hooks` calls ``callback(layer, acts)`` with the ``[batch, tokens, units]`` unit
tensor of each requested layer during a forward pass; :func:`run_forward` feeds a batch of
windows to the base model and, when asked, stops right after the last requested layer's units
were seen (the remaining layers are not computed).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

from neurolabel.activations.models import TargetModel, check_layers


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early (never leaves this module)."""


@contextlib.contextmanager
def unit_hooks(
    target: TargetModel,
    layers: Sequence[int],
    callback: Callable[[int, Any], None],
    *,
    stop_after_last: bool = True,
) -> Iterator[None]:
    """Within the block, every forward pass calls ``callback(layer, acts)`` for each layer in
    ``layers`` (``acts``: ``[batch, tokens, units]``, prefix tokens included) and, with
    ``stop_after_last``, ends after the last of them (use :func:`run_forward`)."""
    layers = check_layers(target, layers)
    last = layers[-1]
    kind = target.unit_spec().hook
    handles = []

    def _make(layer: int):
        def _deliver(acts: Any) -> None:
            callback(layer, acts)
            if stop_after_last and layer == last:
                raise _StopForward

        if kind == "input":
            def pre_hook(module, args):  # noqa: ARG001
                _deliver(args[0])

            return pre_hook

        def hook(module, args, output):  # noqa: ARG001
            _deliver(output)

        return hook

    try:
        for layer in layers:
            module = target.unit_module(layer)
            if kind == "input":
                handles.append(module.register_forward_pre_hook(_make(layer)))
            else:
                handles.append(module.register_forward_hook(_make(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def model_inputs(target: TargetModel, token_ids: Sequence[Sequence[int]]) -> Any:
    """The ``[batch, prefix + tokens]`` input-id tensor for equal-length windows."""
    import torch

    prefix = list(target.prefix_ids)
    rows = [prefix + list(ids) for ids in token_ids]
    return torch.tensor(rows, dtype=torch.long, device=target.device)


def run_forward(target: TargetModel, input_ids: Any) -> None:
    """One forward pass of the base model (no cache); returns early when a hook stops it."""
    try:
        target.model(input_ids=input_ids, use_cache=False)
    except _StopForward:
        pass

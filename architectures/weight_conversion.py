"""Renaming the state dict of an original implementation to one of ours, by an explicit table of rules.

Each network module lists its rules (a regular expression that must match the whole original key, and the
replacement that gives our key) and calls ``rename_keys``; layout changes (reshapes, permutations) are applied
by the network's ``convert_original_state_dict`` afterwards, by name.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

# (pattern on the original's key, replacement in ``re.Match.expand`` syntax; None drops the key)
RenameRule = tuple[str, str | None]
# the entries of a BatchNorm's state dict, as a group for rule patterns
BATCH_NORM_ENTRIES = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: Sequence[RenameRule],
                original: str) -> dict[str, torch.Tensor]:
    """Rename every key of ``state_dict`` by the first rule whose pattern matches the whole key.

    Args:
        state_dict: parameters and buffers of the original implementation.
        rules: (pattern, replacement) pairs, tried in order; a replacement of None drops the key.
        original: name of the original implementation, for error messages.

    Raises:
        KeyError: a key that no rule matches (it has no counterpart here), or two keys renamed to the same one.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in state_dict.items():
        match, replacement = _first_match(key, compiled)
        if match is None:
            raise KeyError(f"The {original} key {key!r} has no counterpart in this implementation. Is the state "
                           f"dict from the original {original} code with its default configuration?")
        if replacement is None:
            continue
        new_key = match.expand(replacement)
        if new_key in renamed:
            raise KeyError(f"The {original} keys {sources[new_key]!r} and {key!r} both map to {new_key!r}")
        renamed[new_key] = value
        sources[new_key] = key
    return renamed


def _first_match(key: str,
                 compiled: Sequence[tuple[re.Pattern, str | None]]) -> tuple[re.Match | None, str | None]:
    for pattern, replacement in compiled:
        match = pattern.fullmatch(key)
        if match:
            return match, replacement
    return None, None

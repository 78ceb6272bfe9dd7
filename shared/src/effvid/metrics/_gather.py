"""Gathering variable-length per-process tensors (ranking metrics need every sample)."""

from __future__ import annotations

import ignite.distributed as idist
import torch


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate ``rows`` (N_p, D) from every process -> (sum N_p, D), in rank order.

    Processes may hold different N_p: sizes are gathered first and rows padded to the largest.
    """
    if idist.get_world_size() == 1:
        return rows
    sizes = idist.all_gather(torch.tensor([rows.shape[0]], device=rows.device))
    sizes = [int(s) for s in torch.as_tensor(sizes).flatten().tolist()]
    longest = max(sizes)
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    gathered = idist.all_gather(padded).reshape(len(sizes), longest, *rows.shape[1:])
    return torch.cat([gathered[i, :n] for i, n in enumerate(sizes)])

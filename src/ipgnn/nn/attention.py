"""Multi-head dot-product attention over each agent's neighbourhood, the layer DGN and CoLight share.

.. math::
    \\alpha^h_{ij} = \\operatorname{softmax}_{j \\in \\mathcal B_{+i}}\\big(s \\,\\langle q^h_i, k^h_j \\rangle\\big),
    \\qquad m^h_i = \\sum_{j \\in \\mathcal B_{+i}} \\alpha^h_{ij} v^h_j

over the incoming edges ``j -> i`` of each receiver (the edge list must already hold the self loops), with
``torch_geometric.utils.softmax``, so no weight ever reaches an agent outside the neighbourhood. Subclasses
project :math:`q, k, v` (``[N, heads, head_dim]``), set the scale :math:`s` and combine the heads:
:class:`ipgnn.algos.dgn.DGNConv` (:math:`s = 1/\\sqrt{d}`, heads concatenated) and
:class:`ipgnn.algos.colight.CoLightAttention` (:math:`s = 1`, heads averaged).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


class NeighbourhoodAttention(MessagePassing):
    """The attention of the module docstring: :meth:`attend` gives :math:`m_i` ``[N, heads, head_dim]``, and
    :meth:`take_attention` the weights of the last call ``[E, heads]`` (row ``e`` is :math:`\\alpha_{ij}` of
    edge ``j -> i``; each receiver's rows sum to 1 per head)."""

    scale: float = 1.0

    def __init__(self) -> None:
        super().__init__(aggr="sum", node_dim=0)
        self._alpha: Tensor | None = None

    def attend(self, edge_index: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self.propagate(edge_index, q=q, k=k, v=v)

    def take_attention(self) -> Tensor | None:
        alpha, self._alpha = self._alpha, None
        return alpha

    # typing.Optional, not `X | None`: PyG's Inspector.type_repr (2.8) fails on types.UnionType when it
    # writes the jittable propagate from this signature
    def message(
        self,
        q_i: Tensor,
        k_j: Tensor,
        v_j: Tensor,
        index: Tensor,
        ptr: Optional[Tensor],  # noqa: UP045
        size_i: Optional[int],  # noqa: UP045
    ) -> Tensor:
        score = (q_i * k_j).sum(-1) * self.scale  # [E, H]
        alpha = softmax(score, index, ptr, size_i)
        self._alpha = alpha
        return v_j * alpha.unsqueeze(-1)

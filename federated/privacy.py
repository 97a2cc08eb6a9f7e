"""The server's privacy ledger: an RDP accountant (Opacus) over every node's DP-SGD steps.

A shopper may shop at the stores of every node, so the ledger composes all nodes' steps of all
rounds (the worst case; a shopper seen by one node alone spends less). ε is reported at the
configured δ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from opacus.accountants import RDPAccountant

from models.private_training import PrivateSteps


def _entries(round_steps: list[PrivateSteps]) -> list[tuple[float, float, int]]:
    """Opacus accountant history entries: (noise multiplier, sample rate, steps)."""
    return [(s.noise_multiplier, s.sample_rate, s.steps) for s in round_steps]


@dataclass
class PrivacyLedger:
    delta: float
    target_epsilon: float = 0.0  # 0: no budget, train every round
    accountant: RDPAccountant = field(default_factory=RDPAccountant)
    spent: bool = False  # True once another round like the last one would pass the target
    rounds: list[list[PrivateSteps]] = field(default_factory=list)  # every node's steps, per round

    def record(self, round_steps: list[PrivateSteps]) -> float:
        """Add one round's steps of every node; return ε so far. Marks the budget spent when a
        further round with the same steps would take ε past the target."""
        self.rounds.append(list(round_steps))
        self.accountant.history += _entries(round_steps)
        epsilon = self.epsilon()
        if self.target_epsilon and self._after(round_steps) > self.target_epsilon:
            self.spent = True
        return epsilon

    def epsilon(self) -> float:
        return self.accountant.get_epsilon(self.delta) if self.accountant.history else 0.0

    def _after(self, round_steps: list[PrivateSteps]) -> float:
        projected = copy.deepcopy(self.accountant)
        projected.history += _entries(round_steps)
        return projected.get_epsilon(self.delta)

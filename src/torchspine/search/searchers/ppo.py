"""The RL controller of NASNet / NAS-FPN / SpineNet: an LSTM policy over the decisions, trained with PPO.

SpineNet (arXiv 1912.05027 §5.1) uses "the RNN controller" of Zoph & Le trained with reinforcement learning, as
NAS-FPN (arXiv 1904.07392) does; neither paper lists the controller's hyper-parameters. We use the recipe NASNet
publishes (arXiv 1707.07012 App. A.2-A.3), which AutoAugment and MnasNet reuse:

* one-layer LSTM with 100 units; all parameters initialised U(-0.1, 0.1);
* PPO with Adam, learning rate 3.5e-4, entropy bonus 1e-5, reward baseline = exponential moving average of
  rewards with decay 0.95, one controller update per 20 completed architectures (the minibatch of 20).

Our choices where no source fixes the value (see also NNI ``algorithms/hpo/ppo_tuner/ppo_tuner.py``):

* Input at step t: embedding of decision t-1 (one table per decision kind, so "2" as a level and "2" as a parent
  index differ) plus a learned embedding of step t (which also tells the LSTM the decision type); a start token at
  t = 0. One linear head per decision *kind* over that kind's vocabulary; illegal values get -inf logits, so a
  sequence's log-probability is exact and forced decisions have log-probability 0.
* Clipped surrogate with ε = 0.2 on *per-token* ratios ``exp(logp_new - logp_old)``; every token of an
  architecture shares its advantage ``A = R - b`` (gamma = lambda = 1, no critic). Per-sequence loss = sum over tokens,
  averaged over the batch; the entropy bonus is ``1e-5 * sum_t H_t`` as in NASNet.
* 4 epochs over each batch of 20 (NNI's default; Google's is unpublished), the whole batch as one minibatch,
  gradient clipping off by default (``grad_clip``).
* Asynchronous workers: each proposal stores its per-token sampling log-probs and the policy version, and the
  ratio uses them, so a result sampled under an older policy is a correct importance-weighted PPO sample. Results
  older than ``max_staleness`` versions (default 10, our choice) are dropped: their clipped ratios carry almost no
  signal and they would pull towards a policy long gone.
* The advantage is fixed when a result arrives (baseline before that reward), so it does not depend on when the
  batch is consumed. The first reward initialises the baseline (advantage 0).
* Seeds and proposals of other searchers are not samples of this policy; they are ignored (returns False).
* ENAS-pytorch's logit tricks (``temperature``, ``tanh_constant``) are available and off by default.

All randomness comes from one explicit `torch.Generator` (initialisation and sampling); `state_dict` holds
weights, Adam state, baseline, pending batch, version and generator state, so a restarted controller samples
exactly what the original would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from torchspine.search.searchers.base import Proposal, SeedQueue, check_reward, check_state
from torchspine.search.space import SearchSpace

__all__ = ["PPOController"]


class _Policy(nn.Module):
    """The LSTM policy: ``decisions (B, T) -> per-token log-probs and entropies (B, T)`` under the masks."""

    def __init__(self, space: SearchSpace, hidden: int, temperature: float, tanh_constant: float | None) -> None:
        super().__init__()
        slots = space.decisions
        self.kind_names = list(space.kinds)
        vocab = [space.kinds[k] for k in self.kind_names]
        kind_ids = [self.kind_names.index(s.kind) for s in slots]
        offsets = [sum(vocab[:k]) for k in range(len(vocab))]
        self.start_token = sum(vocab)
        self.register_buffer("token_offset", torch.tensor([offsets[k] for k in kind_ids]), persistent=False)
        self.token = nn.Embedding(self.start_token + 1, hidden)
        self.step = nn.Embedding(len(slots), hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.heads = nn.ModuleList([nn.Linear(hidden, v) for v in vocab])
        self.kind_ids = kind_ids
        self.steps_of_kind = [[t for t, k in enumerate(kind_ids) if k == kind] for kind in range(len(vocab))]
        self.hidden = hidden
        self.temperature = temperature
        self.tanh_constant = tanh_constant

    def logits(self, out: torch.Tensor, kind: int) -> torch.Tensor:
        logits = self.heads[kind](out) / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def shape_logits_np(self, logits: np.ndarray) -> np.ndarray:
        """`logits`' temperature/tanh shaping for the NumPy sampler."""
        logits = logits / self.temperature
        return self.tanh_constant * np.tanh(logits) if self.tanh_constant is not None else logits

    def inputs(self, decisions: torch.Tensor) -> torch.Tensor:
        """LSTM inputs (B, T, H) for teacher forcing: start token, then the previous decisions."""
        batch, steps = decisions.shape
        prev = decisions[:, :-1] + self.token_offset[:-1]
        start = torch.full((batch, 1), self.start_token, dtype=torch.long)
        tokens = torch.cat([start, prev], dim=1)
        return self.token(tokens) + self.step.weight[:steps]

    def evaluate(self, decisions: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs and entropies (B, T); ``masks[kind]`` is a bool (B, n_steps_of_kind, vocab)."""
        out, _ = self.lstm(self.inputs(decisions))
        logp = torch.zeros(decisions.shape, dtype=out.dtype)
        entropy = torch.zeros(decisions.shape, dtype=out.dtype)
        for kind, steps in enumerate(self.steps_of_kind):
            if not steps:
                continue
            logits = self.logits(out[:, steps], kind).masked_fill(~masks[kind], -math.inf)
            log_softmax = torch.log_softmax(logits, dim=-1)
            chosen = decisions[:, steps].unsqueeze(-1)
            logp[:, steps] = log_softmax.gather(-1, chosen).squeeze(-1)
            # NOTE: masked_fill, not torch.where: 0 * -inf in the unused branch would give NaN gradients.
            plogp = log_softmax.exp() * log_softmax.masked_fill(~masks[kind], 0.0)
            entropy[:, steps] = -plogp.sum(-1)
        return logp, entropy


class PPOController:
    """Sample architectures from an LSTM policy and improve it with PPO on fed-back rewards.

    Args:
        space: the search space.
        seed: seed of the controller's `torch.Generator` (initialisation and sampling).
        seeds: decision sequences proposed first (not used as policy-gradient samples).
        lr: Adam learning rate (NASNet: 3.5e-4).
        hidden: LSTM units (NASNet: 100).
        entropy_weight: weight of the entropy bonus (NASNet: 1e-5).
        baseline_decay: EMA decay of the reward baseline (NASNet: 0.95).
        clip: PPO clip ε.
        epochs: optimisation epochs per update.
        update_batch: fed-back results per update (NASNet: 20).
        max_staleness: drop results sampled more than this many policy versions ago.
        grad_clip: max global gradient norm (None: no clipping).
        init_range: parameters start U(-init_range, init_range) (NASNet: 0.1).
        temperature: logits are divided by it (ENAS-pytorch uses 5; 1 = off).
        tanh_constant: if set, logits = c·tanh(logits) (ENAS-pytorch uses 2.5).
    """

    name = "ppo"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        seeds: Sequence[Sequence[int]] = (),
        lr: float = 3.5e-4,
        hidden: int = 100,
        entropy_weight: float = 1e-5,
        baseline_decay: float = 0.95,
        clip: float = 0.2,
        epochs: int = 4,
        update_batch: int = 20,
        max_staleness: int = 10,
        grad_clip: float | None = None,
        init_range: float = 0.1,
        temperature: float = 1.0,
        tanh_constant: float | None = None,
    ) -> None:
        # (value, valid?) per option; the error names the bad ones with their values.
        checks = {
            "lr": (lr, lr > 0),
            "hidden": (hidden, hidden >= 1),
            "entropy_weight": (entropy_weight, entropy_weight >= 0),
            "baseline_decay": (baseline_decay, 0 <= baseline_decay < 1),
            "clip": (clip, clip > 0),
            "epochs": (epochs, epochs >= 1),
            "update_batch": (update_batch, update_batch >= 1),
            "max_staleness": (max_staleness, max_staleness >= 0),
            "grad_clip": (grad_clip, grad_clip is None or grad_clip > 0),
            "init_range": (init_range, init_range > 0),
            "temperature": (temperature, temperature > 0),
            "tanh_constant": (tanh_constant, tanh_constant is None or tanh_constant > 0),
        }
        bad = {name: value for name, (value, ok) in checks.items() if not ok}
        if bad:
            raise ValueError(f"PPOController: invalid option(s) {bad}")
        self.space = space
        self.lr = lr
        self.entropy_weight = entropy_weight
        self.baseline_decay = baseline_decay
        self.clip = clip
        self.epochs = epochs
        self.update_batch = update_batch
        self.max_staleness = max_staleness
        self.grad_clip = grad_clip
        self._generator = torch.Generator().manual_seed(seed)
        self._policy = _Policy(space, hidden, temperature, tanh_constant)
        with torch.no_grad():
            for param in self._policy.parameters():
                nn.init.uniform_(param, -init_range, init_range, generator=self._generator)
        self._optimizer = torch.optim.Adam(self._policy.parameters(), lr=lr)
        self._seeds = SeedQueue(space, seeds)
        self._version = 0
        self._baseline: float | None = None
        self._pending: list[dict[str, Any]] = []
        self._dropped_stale = 0
        self._sampler_cache: tuple[int, dict[str, Any]] | None = None

    @property
    def policy_version(self) -> int:
        return self._version

    @property
    def baseline(self) -> float | None:
        return self._baseline

    # -- sampling ----------------------------------------------------------------------------------------------

    def propose(self) -> Proposal:
        seeded = self._seeds.pop(self._version)
        if seeded is not None:
            return seeded
        net = self._sampler()
        cursor = self.space.cursor()
        hidden = net["w_hh"].shape[1]
        h, c = np.zeros(hidden), np.zeros(hidden)
        token = self._policy.start_token
        # One draw of uniforms per proposal from the explicit generator (inverse-CDF sampling below).
        uniforms = torch.rand(len(net["kinds"]), generator=self._generator, dtype=torch.float64).tolist()
        decisions, log_probs = [], []
        for t, kind in enumerate(net["kinds"]):
            gates = net["token"][token] + net["step"][t] + net["w_hh"] @ h
            sig = 1.0 / (1.0 + np.exp(-gates[: 3 * hidden]))
            c = sig[hidden : 2 * hidden] * c + sig[:hidden] * np.tanh(gates[3 * hidden :])
            h = sig[2 * hidden :] * np.tanh(c)
            legal = cursor.legal()
            logits = (net["head_w"][kind] @ h + net["head_b"][kind])[legal]
            logits = self._policy.shape_logits_np(logits)
            logits -= logits.max()
            log_z = math.log(float(np.exp(logits).sum()))
            pick = 0
            if len(legal) > 1:  # inverse CDF; a forced decision still consumes its uniform (fixed stream)
                cdf = np.cumsum(np.exp(logits - log_z))
                pick = min(int(np.searchsorted(cdf, uniforms[t], side="right")), len(legal) - 1)
            value = legal[pick]
            cursor.push(value)
            decisions.append(value)
            log_probs.append(float(logits[pick]) - log_z)
            token = net["offsets"][t] + value
        return Proposal(tuple(decisions), tuple(log_probs), self._version, self.name)

    def _sampler(self) -> dict[str, Any]:
        """A float64 NumPy copy of the policy for fast step-by-step sampling, rebuilt after each update.

        The input projections of every token and step are precomputed, so a step is one (4H, H) matrix-vector
        product. Its log-probs agree with the float32 torch evaluation used for training to ~1e-6, so the first
        PPO epoch's ratios are 1 up to rounding.
        """
        if self._sampler_cache is None or self._sampler_cache[0] != self._version:
            policy = self._policy
            with torch.no_grad():
                lstm = policy.lstm
                w_ih = lstm.weight_ih_l0.double()
                bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).double()
                # PyTorch gate order is (i, f, g, o); reorder to (i, f, o, g) so one sigmoid covers three gates.
                order = torch.cat(
                    [
                        torch.arange(0, 2 * policy.hidden),
                        torch.arange(3 * policy.hidden, 4 * policy.hidden),
                        torch.arange(2 * policy.hidden, 3 * policy.hidden),
                    ]
                )
                net = {
                    "token": (policy.token.weight.double() @ w_ih.t())[:, order].numpy(),
                    "step": (policy.step.weight.double() @ w_ih.t() + bias)[:, order].numpy(),
                    "w_hh": lstm.weight_hh_l0.double()[order].numpy(),
                    "head_w": [head.weight.double().numpy() for head in policy.heads],
                    "head_b": [head.bias.double().numpy() for head in policy.heads],
                    "kinds": policy.kind_ids,
                    "offsets": policy.token_offset.tolist(),
                }
            self._sampler_cache = (self._version, net)
        return self._sampler_cache[1]

    def log_probs(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        """Log-probability of each decision sequence under the current policy, shape (B,)."""
        with torch.no_grad():
            logp, _ = self._policy.evaluate(*self._tensors(batch))
        return logp.sum(dim=1)

    def _tensors(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decisions (B, T) and, per kind, the legal-value masks (B, steps of the kind, vocab); validates `batch`."""
        policy = self._policy
        decisions = torch.tensor([list(d) for d in batch], dtype=torch.long)
        masks = [
            np.zeros((len(batch), len(steps), head.out_features), dtype=bool)
            for steps, head in zip(policy.steps_of_kind, policy.heads, strict=True)
        ]
        position = [policy.steps_of_kind[k].index(t) for t, k in enumerate(policy.kind_ids)]
        for b, seq in enumerate(batch):
            for t, legal in enumerate(self.space.masks(seq)):
                masks[policy.kind_ids[t]][b, position[t], legal] = True
        return decisions, [torch.from_numpy(m) for m in masks]

    # -- learning ----------------------------------------------------------------------------------------------

    def feedback(self, proposal: Proposal, reward: float) -> bool:
        """Record `reward`; run a PPO update once `update_batch` fresh results are pending (then True)."""
        reward = check_reward(reward)
        if proposal.searcher != self.name:
            self.space.check(proposal.decisions)
            return False
        self.space.check(proposal.decisions)
        if len(proposal.log_probs) != len(proposal.decisions):
            raise ValueError(
                f"PPO feedback: {len(proposal.log_probs)} log-probs for {len(proposal.decisions)} decisions"
            )
        if self._version - proposal.policy_version > self.max_staleness:
            self._dropped_stale += 1
            return False
        baseline = reward if self._baseline is None else self._baseline
        self._pending.append(
            {
                "decisions": list(proposal.decisions),
                "log_probs": list(proposal.log_probs),
                "policy_version": proposal.policy_version,
                "advantage": reward - baseline,
            }
        )
        self._baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * reward
        if len(self._pending) < self.update_batch:
            return False
        self._update()
        return True

    def _update(self) -> None:
        decisions, masks = self._tensors([item["decisions"] for item in self._pending])
        old = torch.tensor([item["log_probs"] for item in self._pending])
        advantage = torch.tensor([item["advantage"] for item in self._pending]).unsqueeze(1)
        for _ in range(self.epochs):
            logp, entropy = self._policy.evaluate(decisions, masks)
            ratio = torch.exp(logp - old)
            surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - self.clip, 1 + self.clip) * advantage)
            loss = -surrogate.sum(1).mean() - self.entropy_weight * entropy.sum(1).mean()
            self._optimizer.zero_grad()
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self._policy.parameters(), self.grad_clip)
            self._optimizer.step()
        self._pending = []
        self._version += 1

    # -- checkpoint --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "searcher": self.name,
            "space": self.space.fingerprint(),
            "policy": self._policy.state_dict(),
            "optimizer": self._optimizer.state_dict(),
            "generator": self._generator.get_state(),
            "version": self._version,
            "baseline": self._baseline,
            "pending": [dict(item) for item in self._pending],
            "dropped_stale": self._dropped_stale,
            "seeds": self._seeds.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; the constructor's hyper-parameters (e.g. ``lr``) stay in force."""
        check_state(state, self.name, self.space)
        self._policy.load_state_dict(state["policy"])
        self._optimizer.load_state_dict(state["optimizer"])
        for group in self._optimizer.param_groups:
            group["lr"] = self.lr
        self._generator.set_state(state["generator"])
        self._version = int(state["version"])
        self._baseline = None if state["baseline"] is None else float(state["baseline"])
        self._pending = [dict(item) for item in state["pending"]]
        self._dropped_stale = int(state["dropped_stale"])
        self._seeds.load_state_dict(state["seeds"])
        self._sampler_cache = None

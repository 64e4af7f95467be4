"""AMC/HAQ-style DDPG agent: one step per compressible unit, over the joint space, within budget by construction.

Each episode walks the units in execution order (global scaling first). The
state describes the unit (op, channels, kernel, stride, input size,
parameters, what it can save in each budget's metric) and the episode so far
(cost committed, savings still available, the previous action). The actor
outputs one number per decided dimension (keep, weight bits, activation
bits, rank); each picks a rung of that dimension's ladder. Before it is
taken, the action is clipped to the nearest choice that still lets the
remaining units meet every budget at their most compressed (``Layerwise``),
so every episode's candidate is feasible. The reward is the evaluator's
accuracy (optionally plus a cost term) minus a moving-average baseline, and
every step of the episode is credited with it, as in AMC.

Written here rather than taken from an RL library: the episode's reward only
exists after the search engine has fine-tuned the candidate, so control runs
the other way round from a Gym loop (the engine asks, the agent answers),
and the agent must be rebuilt from the study on resume. The pieces are
small, standard DDPG (Lillicrap et al. 2016): actor, critic, target networks
with soft updates, a replay buffer, truncated-normal exploration that decays.

Resume: the agent keeps no state of its own. Every evaluated trial in the
history is an episode (DDPG is off-policy, so trials proposed by other
strategies teach it too); its states and clipped actions are recomputed from
the candidate, and the network updates are replayed with the same seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget
from autocompress.search.layerwise import DEFAULT_DIMS, Layerwise
from autocompress.search.study import TrialRecord
from autocompress.space import Candidate

log = logging.getLogger(__name__)


@dataclass
class DDPGConfig:
    """Hyper-parameters; the defaults follow AMC, scaled down for searches of tens of episodes."""

    dims: tuple[str, ...] = DEFAULT_DIMS
    warmup_episodes: int = 8  # random actions while the replay buffer fills
    warmup_jitter: float = 0.15  # per-unit spread around each warm-up episode's random level
    hidden: int = 64
    actor_lr: float = 1e-3
    critic_lr: float = 2e-3
    tau: float = 0.05  # soft target update
    discount: float = 0.0  # every step already carries the episode's reward
    batch_size: int = 64
    updates_per_step: int = 1  # network updates per step of each finished episode
    buffer_size: int = 4000
    noise_sigma: float = 0.5  # truncated-normal exploration, on the [0, 1] action scale
    noise_decay: float = 0.95  # per episode after warm-up
    baseline_decay: float = 0.9  # exponential moving average of rewards
    cost_weight: float = 0.0  # reward = accuracy - cost_weight * (cost / reference), first budget's metric

    def __post_init__(self) -> None:
        if self.warmup_episodes < 0 or self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ValueError("DDPGConfig: warmup_episodes >= 0 and buffer_size >= batch_size >= 1 expected")


class ReplayBuffer:
    """A ring buffer of (state, action, reward, next state, done) transitions."""

    def __init__(self, capacity: int, state_dim: int, action_dim: int):
        self.capacity = capacity
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.done = np.zeros(capacity, dtype=np.float32)
        self.size = 0
        self._next = 0

    def add(self, state, action, reward: float, next_state, done: bool) -> None:
        i = self._next
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.done[i] = next_state, float(done)
        self._next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(self.size, size=n)
        return tuple(torch.from_numpy(a[idx]) for a in
                     (self.states, self.actions, self.rewards, self.next_states, self.done))


def truncated_normal(rng: np.random.Generator, mean: np.ndarray, sigma: float,
                     low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Gaussian noise around ``mean`` kept inside [low, high] by resampling (not by piling up at the bounds)."""
    mean = np.clip(np.asarray(mean, dtype=float), low, high)
    if sigma <= 0:
        return mean
    out = rng.normal(mean, sigma)
    for _ in range(100):
        bad = (out < low) | (out > high)
        if not bad.any():
            return out
        out[bad] = rng.normal(mean[bad], sigma)
    return np.clip(out, low, high)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class DDPG:
    """Actor, critic and their target networks."""

    def __init__(self, state_dim: int, action_dim: int, config: DDPGConfig, seed: int):
        self.config = config
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's global RNG left alone
            torch.manual_seed(seed)
            self.actor = nn.Sequential(_mlp(state_dim, config.hidden, action_dim), nn.Sigmoid())
            self.critic = _mlp(state_dim + action_dim, config.hidden, 1)
            self.actor_target = nn.Sequential(_mlp(state_dim, config.hidden, action_dim), nn.Sigmoid())
            self.critic_target = _mlp(state_dim + action_dim, config.hidden, 1)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)

    def act(self, state: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0].numpy().astype(float)

    def q(self, state: np.ndarray, action: np.ndarray) -> float:
        with torch.no_grad():
            x = torch.cat([torch.as_tensor(state, dtype=torch.float32), torch.as_tensor(action, dtype=torch.float32)])
            return float(self.critic(x[None])[0, 0])

    def update(self, batch: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        """One critic and one actor step; returns (critic loss, actor objective)."""
        s, a, r, s2, done = batch
        with torch.no_grad():
            next_q = self.critic_target(torch.cat([s2, self.actor_target(s2)], dim=1))[:, 0]
            target = r + self.config.discount * (1 - done) * next_q
        q = self.critic(torch.cat([s, a], dim=1))[:, 0]
        critic_loss = nn.functional.mse_loss(q, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        actor_q = self.critic(torch.cat([s, self.actor(s)], dim=1)).mean()
        self.actor_opt.zero_grad()
        (-actor_q).backward()
        self.actor_opt.step()
        tau = self.config.tau
        with torch.no_grad():
            for net, target_net in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), target_net.parameters(), strict=True):
                    tp.mul_(1 - tau).add_(tau * p)
        return critic_loss.item(), actor_q.item()


class DDPGStrategy:
    """The agent as a search strategy: ``propose(history)`` returns the next episode's candidate."""

    name = "ddpg"
    evaluates_over_budget = False

    def __init__(self, costs: CostModel, budgets: Sequence[Budget], *, config: DDPGConfig | None = None,
                 seed: int = 0):
        self.config = config or DDPGConfig()
        self.layerwise = Layerwise(costs, budgets, self.config.dims)
        self.layerwise.check_start()
        self.seed = seed
        static, savings = self._static_features()
        # padded with the terminal state's row; "rest": savings still available from step t on
        self._static = np.vstack([static, np.zeros((1, static.shape[1]))])
        self._rest = np.vstack([np.cumsum(savings[::-1], axis=0)[::-1], np.zeros((1, savings.shape[1]))])
        self.state_dim = static.shape[1] + 2 * len(budgets) + self.layerwise.action_dim
        self.agent = DDPG(self.state_dim, self.layerwise.action_dim, self.config, seed)
        self.buffer = ReplayBuffer(self.config.buffer_size, self.state_dim, self.layerwise.action_dim)
        self.baseline: float | None = None
        self.episodes = 0  # evaluated episodes learned from
        self._seen: set[int] = set()

    # -- state --------------------------------------------------------------------------------
    def _static_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Per step: normalized unit features, and what the step can save in each budget's metric."""
        lw = self.layerwise
        graph = lw.space.graph
        n = len(lw.steps)
        # what each step can save at most: its columns at the most compressed rung, everything else identity
        rows = np.repeat(lw.identity_row[None, :], n, axis=0)
        for t, step in enumerate(lw.steps):
            rows[t, list(step.columns)] = [lad[0] for lad in step.ladders]
        savings = 1.0 - lw.budget_fractions(rows)
        feats = []
        for t, step in enumerate(lw.steps):
            unit = graph.units.get(step.name)
            if unit is None:  # the scaling step
                row = [t / max(n - 1, 1), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            else:
                params = unit.in_channels // unit.groups * unit.out_channels * unit.kernel_size[0] * unit.kernel_size[1]
                row = [t / max(n - 1, 1), 0, unit.op == "conv" and not unit.depthwise, unit.depthwise,
                       unit.op == "linear", unit.in_channels, unit.out_channels, unit.kernel_size[0],
                       unit.stride[0], unit.in_hw[0], params]
            feats.append(row + list(savings[t]))
        feats = np.array(feats, dtype=float)
        scale = np.abs(feats).max(axis=0)
        return feats / np.where(scale > 0, scale, 1.0), savings

    def _episode(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States (steps + 1, state_dim) and actions (steps, action_dim) of the episode that built ``row``."""
        lw = self.layerwise
        actions = lw.actions_of(row)
        committed = lw.budget_fractions(lw.prefix_rows(row))
        return self._states(committed, actions), actions

    def _states(self, committed: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(steps + 1, state_dim): unit features, cost committed, savings still available, previous action."""
        n = len(self.layerwise.steps)
        previous = np.vstack([np.ones((1, actions.shape[1])), actions])
        return np.hstack([self._static, committed[: n + 1], self._rest, previous[: n + 1]]).astype(np.float32)

    # -- learning -------------------------------------------------------------------------------
    def _reward(self, record: TrialRecord) -> float:
        reward = float(record.accuracy)
        if self.config.cost_weight and self.layerwise.budgets:
            budget = self.layerwise.budgets[0]
            reward -= self.config.cost_weight * float(budget.values(record.costs) / self.layerwise.reference_metrics[0])
        return reward

    def observe(self, record: TrialRecord) -> None:
        """Learn from one evaluated trial (an episode)."""
        row = self.layerwise.encoding.encode([record.candidate])[0]
        states, actions = self._episode(row)
        reward = self._reward(record)
        c = self.config
        self.baseline = reward if self.baseline is None else c.baseline_decay * self.baseline + (1 - c.baseline_decay) * reward
        advantage = reward - self.baseline
        n = len(actions)
        for t in range(n):
            self.buffer.add(states[t], actions[t], advantage, states[t + 1], t == n - 1)
        self.episodes += 1
        if self.episodes > c.warmup_episodes and self.buffer.size >= c.batch_size:
            rng = np.random.default_rng([self.seed, self.episodes, 1])
            losses = [self.agent.update(self.buffer.sample(c.batch_size, rng)) for _ in range(n * c.updates_per_step)]
            log.debug("ddpg episode %d: reward %.4f, advantage %+.4f, critic loss %.4g", self.episodes, reward,
                      advantage, losses[-1][0])

    def sync(self, history: Sequence[TrialRecord]) -> None:
        for record in sorted(history, key=lambda r: r.number):
            if record.number in self._seen or not record.evaluated or record.accuracy is None:
                continue
            self._seen.add(record.number)
            self.observe(record)

    # -- acting ---------------------------------------------------------------------------------
    def sigma(self) -> float:
        c = self.config
        return c.noise_sigma * c.noise_decay ** max(0, self.episodes - c.warmup_episodes)

    def rollout(self, rng: np.random.Generator, *, explore: bool = True) -> np.ndarray:
        """One episode: an encoded candidate that meets every budget."""
        lw = self.layerwise
        n = len(lw.steps)
        row = lw.identity_row.copy()
        actions = np.ones((n, lw.action_dim))
        committed = np.zeros((n + 1, len(lw.budgets)))
        warmup = explore and self.episodes < self.config.warmup_episodes
        # warm-up: one random level per dimension for the whole episode, jittered per unit; independent uniform
        # draws per unit would mix the harshest choices into nearly every episode
        level = rng.uniform(size=lw.action_dim)
        for t, step in enumerate(lw.steps):
            committed[t] = lw.budget_fractions(row[None, :])[0]
            if warmup:
                wanted = truncated_normal(rng, level, self.config.warmup_jitter)
            else:
                state = self._states(committed, actions)[t]
                wanted = self.agent.act(state)
                if explore:
                    wanted = truncated_normal(rng, wanted, self.sigma())
            choice = lw.clip(row, t, wanted)
            row[list(step.columns)] = choice
            actions[t] = lw.step_action(row, t)
        return row

    def propose(self, history: Sequence[TrialRecord]) -> Candidate:
        self.sync(history)
        rng = np.random.default_rng([self.seed, len(history)])
        return self.layerwise.encoding.decode(self.rollout(rng))

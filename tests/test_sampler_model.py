"""Window sampler semantics and the Decision Transformer itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dtrepro.agent.dropout
from dtrepro.agent.dropout import dropout
from dtrepro.agent.model import DecisionTransformer, ModelConfig, action_loss
from dtrepro.data.d4rl import D4RLData
from dtrepro.runtime.errors import DtreproError
from dtrepro.training.sampler import Trajectories, WindowSampler, returns_to_go


def toy(lengths=(5, 3, 8), obs_dim=4, act_dim=2) -> D4RLData:
    """Episodes whose rows say where they come from: observation[:, 0] = episode, [:, 1] = step."""
    n = sum(lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(n_) for n_ in lengths])
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:, 0], obs[:, 1] = episode, step
    timeouts = np.zeros(n, bool)
    timeouts[np.cumsum(lengths) - 1] = True
    return D4RLData(
        {
            "observations": obs,
            "actions": np.tile(step[:, None], (1, act_dim)).astype(np.float32) / 10,
            "rewards": (episode * 100 + step).astype(np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": timeouts,
        }
    )


def test_returns_to_go_per_episode():
    rewards = np.array([1, 2, 3, 10, 20], np.float32)
    np.testing.assert_array_equal(returns_to_go(rewards, np.array([2, 4])), [6, 5, 3, 30, 20])


def test_windows_are_left_padded_masked_and_never_cross_episodes():
    data = toy()
    traj = Trajectories.from_d4rl(data, return_scale=10.0, max_timestep=8, device="cpu")
    batch = WindowSampler(traj, context_len=4, batch_size=4096, seed=0).sample()
    states = batch["states"] * torch.as_tensor(traj.state_std) + torch.as_tensor(traj.state_mean)
    mask = batch["mask"]
    for i in range(4096):
        m = mask[i]
        pad = int((~m).sum())
        assert m[pad:].all() and not m[:pad].any()  # padding only on the left
        ep, step = states[i, m, 0].round().long(), states[i, m, 1].round().long()
        assert (ep == ep[0]).all()  # one episode per window
        assert torch.equal(step, step[0] + torch.arange(len(step)))  # consecutive rows
        lengths = (5, 3, 8)
        if pad:
            assert step[-1] == lengths[ep[0]] - 1  # padding only where the episode ended
        expected_rtg = [sum(100 * int(ep[0]) + s for s in range(int(t), lengths[ep[0]])) / 10 for t in step]
        np.testing.assert_allclose(batch["returns_to_go"][i, m].numpy(), expected_rtg, rtol=1e-6)
        assert torch.equal(batch["timesteps"][i, m], step)  # each step its own embedding
        assert (batch["states"][i, ~m] == 0).all() and (batch["returns_to_go"][i, ~m] == 0).all()


def test_episodes_weighted_by_length_and_starts_uniform():
    traj = Trajectories.from_d4rl(toy(), return_scale=1.0, max_timestep=100, device="cpu")
    sampler = WindowSampler(traj, context_len=2, batch_size=200_000, seed=1)
    batch = sampler.sample()
    first_row = batch["states"][:, -1, 0] * traj.state_std[0] + traj.state_mean[0]  # last real row's episode
    counts = np.bincount(first_row.round().long().numpy(), minlength=3) / 200_000
    np.testing.assert_allclose(counts, np.array([5, 3, 8]) / 16, atol=0.01)
    # start uniform within episode 2 (8 rows): the first real timestep of unpadded windows plus padded ones
    ep2 = first_row.round().long() == 2
    starts = torch.where(batch["mask"][:, 0], batch["timesteps"][:, 0], batch["timesteps"][:, 1])[ep2]
    np.testing.assert_allclose(np.bincount(starts.numpy(), minlength=8) / int(ep2.sum()), 1 / 8, atol=0.01)


def test_sampler_is_seeded():
    traj = Trajectories.from_d4rl(toy(), return_scale=1.0, max_timestep=100, device="cpu")
    a = WindowSampler(traj, 3, 64, seed=5).sample()
    b = WindowSampler(traj, 3, 64, seed=5).sample()
    c = WindowSampler(traj, 3, 64, seed=6).sample()
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["states"], c["states"])


@pytest.mark.parametrize("k, batch, message", [(9, 8, "longer than every episode"), (4, 0, "at least 1")])
def test_bad_sampler_settings(k, batch, message):
    traj = Trajectories.from_d4rl(toy(), return_scale=1.0, max_timestep=100, device="cpu")
    with pytest.raises(DtreproError, match=message):
        WindowSampler(traj, k, batch, seed=0)


def test_model_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    cfg = ModelConfig(state_dim=4, act_dim=2, embed_dim=32, layers=2, heads=2, context_len=5, dropout=0.0)
    model = DecisionTransformer(cfg).eval()
    s, a = torch.randn(1, 5, 4), torch.randn(1, 5, 2)
    r, t = torch.randn(1, 5), torch.arange(5).unsqueeze(0)
    mask = torch.tensor([[False, False, True, True, True]])
    out = model(s, a, r, t, mask)
    assert out.shape == (1, 5, 2) and torch.isfinite(out).all() and out.abs().max() <= 1
    s2, a2 = s.clone(), a.clone()
    s2[0, :2] += 5.0  # change the padded positions
    a2[0, 3:] += 5.0  # and actions at or after the predicted step 3's own action
    out2 = model(s2, a2, r, t, mask)
    torch.testing.assert_close(out[0, 2:4], out2[0, 2:4])  # a_3 is not seen by s_3's prediction


@pytest.mark.parametrize("k, heads", [(20, 1), (5, 2), (1, 4)])
def test_final_action_is_the_full_forwards_last_prediction(k, heads):
    torch.manual_seed(k)
    cfg = ModelConfig(state_dim=4, act_dim=2, embed_dim=32, layers=3, heads=heads, context_len=k, dropout=0.1)
    model = DecisionTransformer(cfg).eval()
    s, a, r = torch.randn(6, k, 4), torch.randn(6, k, 2), torch.randn(6, k)
    t = torch.arange(k).expand(6, k)
    mask = torch.arange(k).expand(6, k) >= torch.tensor([0, 0, 1, k // 2, k - 1, k - 1])[:, None]
    full = model(s, a, r, t, mask)[:, -1]
    for queries in (1, 3, 16, 100):
        torch.testing.assert_close(model.final_action(s, a, r, t, mask, queries=queries), full, rtol=0, atol=1e-6)
    a[:, -1] += 5.0  # the last action is what is being predicted: it is not read
    torch.testing.assert_close(model.final_action(s, a, r, t, mask), full, rtol=0, atol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_dropout_drops_p_of_the_entries_at_random_and_keeps_the_mean(p, dtype):
    n = 1 << 20
    torch.manual_seed(0)
    x = torch.ones(n // 4, 4, dtype=dtype, requires_grad=True)
    y = dropout(x, p)
    dropped = y == 0
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(dropped.float().mean().item() - p) < 6 * sigma
    for column in range(4):  # each of the four 16-bit uniforms of a 64-bit draw, the sign-bearing top one too
        assert abs(dropped[:, column].float().mean().item() - p) < 6 * 2 * sigma
    both = (dropped[:, 0] & dropped[:, 1]).float().mean().item()  # neighbours drawn from one word: independent
    assert abs(both - p * p) < 6 * 2 * (p * p * (1 - p * p) / n) ** 0.5
    kept = y[~dropped].float()
    assert torch.equal(kept, torch.full_like(kept, kept[0].item()))  # every kept entry scaled alike, by 1/(1-p)
    assert kept[0].item() == pytest.approx(1 / (1 - p), rel=1e-2 if dtype == torch.bfloat16 else 1e-4)
    assert abs(y.float().mean().item() - 1) < 6 * sigma / (1 - p) + 0.01 * (dtype == torch.bfloat16)
    y.float().sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient goes through the kept entries, scaled alike
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), p), y.detach())  # torch's seed decides the mask
    assert not torch.equal(dropout(x.detach(), p), y.detach())
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x


def test_cpu_attention_with_dropout_computes_what_sdpa_computes(monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(state_dim=4, act_dim=2, embed_dim=32, layers=2, heads=2, context_len=5, dropout=0.3)
    model = DecisionTransformer(cfg)
    s, a, r = torch.randn(3, 5, 4), torch.randn(3, 5, 2), torch.randn(3, 5)
    t, mask = torch.arange(5).expand(3, 5), torch.arange(5).expand(3, 5) >= torch.tensor([0, 2, 4])[:, None]
    expected = model.eval()(s, a, r, t, mask)  # scaled_dot_product_attention, no dropout
    trained = model.train()(s, a, r, t, mask)
    assert not torch.allclose(trained, expected)  # dropout acts in training
    # the CPU path, dropping nothing
    monkeypatch.setattr(dtrepro.agent.dropout, "dropout", lambda x, p, training=True: x)
    torch.testing.assert_close(model.train()(s, a, r, t, mask), expected, rtol=0, atol=1e-6)


def test_tiny_model_overfits_tiny_dataset():
    torch.manual_seed(0)
    traj = Trajectories.from_d4rl(toy(), return_scale=100.0, max_timestep=10, device="cpu")
    sampler = WindowSampler(traj, context_len=3, batch_size=64, seed=0)
    cfg = ModelConfig(state_dim=4, act_dim=2, embed_dim=32, layers=1, heads=1, context_len=3, dropout=0.0)
    model = DecisionTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        b = sampler.sample()
        loss = action_loss(
            model(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["mask"]), b["actions"], b["mask"]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < np.mean(losses[:5]) / 10


def test_an_episode_longer_than_the_timestep_embeddings_is_refused_not_clamped():
    """Timesteps past the model's last embedding were clamped to it without a word (one repair.max_episode_steps
    above the envs' time limit away)."""
    Trajectories.from_d4rl(toy((10, 3)), 1000.0, 10, "cpu")  # exactly the limit: every step its own embedding
    with pytest.raises(DtreproError, match="an episode of 11 steps, but the model embeds timesteps up to 10"):
        Trajectories.from_d4rl(toy((11, 3)), 1000.0, 10, "cpu")

"""Tests of mriprior.priors.networks: shapes, conditioning, batch independence, presets, factory."""

from __future__ import annotations

import pytest
import torch

from mriprior.errors import InputError
from mriprior.priors.networks import (
    PRESETS,
    ScoreUNet,
    count_parameters,
    network_from_config,
    network_from_preset,
)

# A tiny network (3 levels -> sizes divisible by 4) keeps every test fast.
TINY = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(-1,))


def tiny(**kw) -> ScoreUNet:
    torch.manual_seed(0)
    return ScoreUNet(**{**TINY, **kw}).eval()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (48, 64), (4, 8)])
def test_output_shape(batch, size):
    net = tiny()
    x = torch.randn(batch, 2, *size)
    out = net(x, torch.full((batch,), 0.5))
    assert out.shape == (batch, 2, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_channels_and_fully_convolutional():
    net = tiny(in_channels=1, out_channels=3)
    assert net(torch.randn(2, 1, 16, 16), 0.3).shape == (2, 3, 16, 16)
    # The same weights apply to a larger image (train on crops, apply to full images).
    assert net(torch.randn(1, 1, 64, 96), 0.3).shape == (1, 3, 64, 96)
    assert tiny(in_channels=1).out_channels == 1  # out_channels=None -> in_channels


def test_float64():
    net = tiny().double()
    x = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    out = net(x, torch.tensor([0.1, 1.0], dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("size", [(30, 32), (32, 34), (2, 4)])
def test_wrong_size_raises_naming_shape(size):
    net = tiny()
    with pytest.raises(InputError, match=rf"{size[0]} x {size[1]}.*divisible by 4"):
        net(torch.randn(1, 2, *size), 0.5)


def test_bad_inputs_raise():
    net = tiny()
    with pytest.raises(InputError, match="channels"):
        net(torch.randn(1, 1, 16, 16), 0.5)
    with pytest.raises(InputError, match=r"\(2, 16, 16\)"):
        net(torch.randn(2, 16, 16), 0.5)
    with pytest.raises(InputError, match="float"):
        net(torch.zeros(1, 2, 16, 16, dtype=torch.int64), 0.5)
    with pytest.raises(InputError, match=r"shape \(3,\)"):
        net(torch.randn(2, 2, 16, 16), torch.ones(3))
    with pytest.raises(InputError, match="positive"):
        net(torch.randn(2, 2, 16, 16), torch.tensor([0.5, 0.0]))


def test_sigma_conditioning_matters():
    net = tiny()
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        a, b = net(x, 0.1), net(x, 1.0)
    assert (a - b).abs().max() > 1e-4
    # A scalar, a 0-d tensor, a (B,) and a (B, 1, 1, 1) sigma mean the same.
    with torch.no_grad():
        for s in (torch.tensor(0.1), torch.full((2,), 0.1), torch.full((2, 1, 1, 1), 0.1)):
            torch.testing.assert_close(net(x, s), a)


@pytest.mark.parametrize("attention_levels", [(-1,), (0, 2)])
def test_per_sample_sigma_equals_one_by_one(attention_levels):
    net = tiny(attention_levels=attention_levels, dropout=0.2)  # eval mode: dropout off
    x = torch.randn(4, 2, 16, 24)
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0])
    with torch.no_grad():
        batched = net(x, sigma)
        single = torch.cat([net(x[i : i + 1], sigma[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_dropout_active_in_train_mode_only():
    net = tiny(dropout=0.5)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        e1, e2 = net(x, 0.5), net(x, 0.5)
        net.train()
        t1, t2 = net(x, 0.5), net(x, 0.5)
    torch.testing.assert_close(e1, e2)
    assert (t1 - t2).abs().max() > 1e-6


def test_gradient_flows_to_all_parameters():
    net = tiny(attention_levels=(0, -1), cond_channels=1).train()
    x = torch.randn(2, 2, 16, 16)
    out = net(x, torch.tensor([0.1, 2.0]), cond=torch.randn(2, 1, 16, 16))
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    # The Fourier frequencies are a fixed buffer, not a parameter.
    assert "fourier.freqs" in dict(net.named_buffers())
    assert "fourier.freqs" not in dict(net.named_parameters())


def test_conditional_channels():
    net = tiny(in_channels=2, cond_channels=1)
    x = torch.randn(2, 2, 16, 16)
    c1, c2 = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        o1, o2 = net(x, 0.5, cond=c1), net(x, 0.5, cond=c2)
    assert o1.shape == (2, 2, 16, 16)
    assert (o1 - o2).abs().max() > 1e-4  # the condition matters
    with pytest.raises(InputError, match="cond"):
        net(x, 0.5)
    with pytest.raises(InputError, match=r"\(2, 2, 16, 16\)"):
        net(x, 0.5, cond=torch.randn(2, 2, 16, 16))
    with pytest.raises(InputError, match="cond_channels=0"):
        tiny()(x, 0.5, cond=c1)


def test_deterministic_init_from_global_seed():
    torch.manual_seed(123)
    a = ScoreUNet(**TINY)
    torch.manual_seed(123)
    b = ScoreUNet(**TINY)
    torch.manual_seed(124)
    c = ScoreUNet(**TINY)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:  # parameters and the Fourier-frequency buffer
        assert torch.equal(sa[k], sb[k]), k
    assert not torch.equal(sa["fourier.freqs"], sc["fourier.freqs"])


def test_count_parameters():
    net = tiny()
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    net.conv_in.weight.requires_grad_(False)
    frozen = net.conv_in.weight.numel()
    assert count_parameters(net, trainable_only=True) == count_parameters(net) - frozen


@pytest.mark.parametrize(
    "name, low, high", [("cpu-small", 1_000_000, 2_000_000), ("published", 7_500_000, 10_000_000)]
)
def test_presets(name, low, high):
    net = network_from_preset(name)
    n = count_parameters(net)
    assert low <= n <= high, n
    assert n == sum(p.numel() for p in net.parameters())
    assert net.config == {**PRESETS[name], "out_channels": PRESETS[name]["in_channels"]}
    # Presets take overrides, e.g. a magnitude prior or a conditional phase model.
    cond = network_from_preset(name, in_channels=1, cond_channels=1)
    assert (cond.in_channels, cond.cond_channels) == (1, 1)


def test_config_round_trip_reproduces_network():
    net = tiny(cond_channels=1)
    rebuilt = network_from_config(net.config).eval()
    rebuilt.load_state_dict(net.state_dict())
    x, c = torch.randn(1, 2, 16, 16), torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, 0.2, cond=c), net(x, 0.2, cond=c))


def test_factory_validation():
    cfg = {"type": "unet", **TINY, "channel_mults": [1, 2, 2]}  # lists from YAML are fine
    assert isinstance(network_from_config(cfg), ScoreUNet)
    with pytest.raises(InputError, match="'base_chanels'"):
        network_from_config({"type": "unet", "base_chanels": 8})
    with pytest.raises(InputError, match="'refinenet9'"):
        network_from_config({"type": "refinenet9"})
    with pytest.raises(InputError, match="'type'"):
        network_from_config({"base_channels": 8})
    with pytest.raises(InputError, match="attention_levels"):
        network_from_config({**cfg, "attention_levels": [3]})
    with pytest.raises(InputError, match="dropout"):
        network_from_config({**cfg, "dropout": 1.5})
    with pytest.raises(InputError, match="channel_mults"):
        network_from_config({**cfg, "channel_mults": "122"})
    with pytest.raises(InputError, match="no-such-preset"):
        network_from_preset("no-such-preset")


def test_negative_attention_levels_are_normalised():
    assert tiny(attention_levels=(-1, 0, -3)).config["attention_levels"] == [0, 2]


def test_channels_last_is_the_same_function():
    from mriprior.priors.networks import network_from_preset

    torch.manual_seed(0)
    net = network_from_preset("cpu-small", base_channels=8).eval()
    x = torch.randn(2, 2, 32, 32)
    sigma = torch.tensor([0.05, 0.5])
    with torch.no_grad():
        ref = net(x, sigma)
        out = net.use_channels_last(True)(x, sigma)
    assert net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    # the exported state is plain (contiguous) tensors either way
    assert all(v.contiguous().shape == v.shape for v in net.state_dict().values())
    net.use_channels_last(False)
    with torch.no_grad():
        assert torch.allclose(net(x, sigma), ref, atol=1e-6)

"""Deploy a diffusion prior outside Python: a TorchScript denoiser in BART 1.0's convention.

BART 1.0 loads TorchScript networks (``bart sample --external-graph NET.pt``; BART's
``src/grecon/priors.c`` and ``src/nn/pytorch_cpp_wrapper.cc``) and calls::

    forward(x, sigma) -> D        x: complex64 (batch, y, x)   sigma: complex64 (batch,)

expecting the denoised image ``D(x, sigma) = E[x0 | x]``, which BART turns into a score
``(D - x) / sigma^2``. :func:`export_torchscript` wraps an exported prior (any of the VE / VP /
EDM parametrisations, through :meth:`ScoreModel.denoise`) in exactly that interface and traces
it. The traced graph has no size, batch or device constants, and a scripted shell zero-pads
other sizes to the network's ``size_multiple`` (centred, cropped back, as mriprior's own
reconstruction does): one file serves every batch and every image size (checked at export
time by running it on a second shape against the Python model).

Conventions the caller must match (also stored in the archive as ``extra/mriprior.json``):

* **Noise.** Our priors are trained with real Gaussian noise of standard deviation sigma on
  each of Re and Im, i.e. complex noise ``CN(0, 2 sigma^2)``: what BART calls a real-valued
  network. Pass ``-r`` / ``--real-valued`` to ``bart sample``, which then evaluates the network
  at ``sigma / sqrt(2)`` for its ``CN(0, sigma^2)`` noise levels.
* **Intensity.** The training images were normalised to maximum magnitude 1; scale the data so
  the image has maximum magnitude about 1 (``mriprior recon`` does this with
  :func:`mriprior.recon.posterior.data_scale`; with BART, ``bart scale``).
* **Orientation.** ``(y, x)`` as in the rest of mriprior: BART's dim 0 (read-out) is our ``x``.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mriprior.diffusion.losses import ScoreModel
from mriprior.errors import InputError
from mriprior.io.files import atomic_write_bytes
from mriprior.priors.export import load_prior, prior_files, prior_kind

__all__ = ["BartDenoiser", "export_torchscript", "CONVENTION"]

CONVENTION = {
    "interface": "forward(x: complex64 (batch, y, x), sigma: complex64 (batch,)) -> "
                 "D(x, sigma): complex64 (batch, y, x), the MMSE denoiser E[x0 | x]",
    "noise": "x = x0 + sigma * (n_re + i n_im), n_re, n_im ~ N(0, 1): complex noise "
             "CN(0, 2 sigma^2); BART: pass -r / --real-valued",
    "intensity": "images normalised to max magnitude ~1 (the training normalisation)",
    "target": "BART 1.0 bart sample --external-graph (TorchScript)",
}


class BartDenoiser(nn.Module):
    """``forward(x, sigma)``: the denoiser of a diffusion prior for complex images (see module)."""

    def __init__(self, model: ScoreModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.real if sigma.is_complex() else sigma
        return self.model.denoise(x, s.reshape(-1).to(x.real.dtype))


class _Padded(nn.Module):
    """Scripted shell around the traced denoiser: zero-pads any image size to the network's
    size multiple (centred, as :class:`mriprior.recon.priors.DiffusionPrior` does) and crops
    the result; shape arithmetic is TorchScript, so it is dynamic."""

    def __init__(self, core: torch.jit.ScriptModule, multiple: int):
        super().__init__()
        self.core = core
        self.multiple = multiple

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph, pw = (self.multiple - h % self.multiple) % self.multiple, \
            (self.multiple - w % self.multiple) % self.multiple
        if ph == 0 and pw == 0:
            return self.core(x, sigma).contiguous()
        pad = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]
        v = torch.complex(F.pad(x.real, pad), F.pad(x.imag, pad))
        d = self.core(v, sigma)
        # contiguous: BART copies the output's memory as a dense (batch, y, x) array
        return d[:, ph // 2: ph // 2 + h, pw // 2: pw // 2 + w].contiguous()


class _PositionDenoiser(nn.Module):
    """A patch prior's denoiser with its position channels as an input (traced):
    ``forward(x, sigma, pos)``, ``pos`` ``(batch, 2, y, x)``."""

    def __init__(self, net: nn.Module, meta: dict):
        super().__init__()
        self.net = net
        self.parametrisation = ScoreModel.from_meta(net, meta).parametrisation
        self.sigma_data = (meta.get("diffusion") or {}).get("sigma_data")

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        s = sigma.real if sigma.is_complex() else sigma
        model = ScoreModel(self.net, self.parametrisation, cond=pos, sigma_data=self.sigma_data)
        return model.denoise(x, s.reshape(-1).to(x.real.dtype))


class _PaddedPositions(nn.Module):
    """Scripted shell of a patch prior: zero-pads to the size multiple like :class:`_Padded` and
    computes the position channels of :func:`mriprior.priors.patches.position_channels` for the
    image's own size (any size: the arithmetic is TorchScript)."""

    def __init__(self, core: torch.jit.ScriptModule, multiple: int, ref_y: int, ref_x: int):
        super().__init__()
        self.core = core
        self.multiple = multiple
        self.ref_y = ref_y
        self.ref_x = ref_x

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        ph, pw = (self.multiple - h % self.multiple) % self.multiple, \
            (self.multiple - w % self.multiple) % self.multiple
        pad = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]
        v = torch.complex(F.pad(x.real, pad), F.pad(x.imag, pad))
        ys = (float(-(ph // 2)) + torch.arange(h + ph, device=x.device, dtype=torch.float32)
              + 0.5 - h / 2) / (self.ref_y / 2)
        xs = (float(-(pw // 2)) + torch.arange(w + pw, device=x.device, dtype=torch.float32)
              + 0.5 - w / 2) / (self.ref_x / 2)
        pos = torch.stack([ys[:, None].expand(h + ph, w + pw),
                           xs[None, :].expand(h + ph, w + pw)], 0)
        d = self.core(v, sigma, pos[None].expand(b, 2, h + ph, w + pw).contiguous())
        return d[:, ph // 2: ph // 2 + h, pw // 2: pw // 2 + w].contiguous()


def _example(batch: int, size, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *size, generator=g, dtype=torch.complex64) * 0.5
    sigma = torch.exp(torch.empty(batch).uniform_(-4.0, 0.0, generator=g)).to(torch.complex64)
    return x.to(device), sigma.to(device)


def export_torchscript(prior, out, *, size=(64, 64), device="cpu", check: bool = True) -> dict:
    """Write prior ``prior`` (a path / NAME as :func:`load_prior` takes) as TorchScript ``out``.

    ``size``: the (y, x) used for tracing; ``check``: run the traced module on a second batch
    size and image size and compare with the Python model (an :class:`InputError` if they
    differ). Trace on the device it will run on (``device="cuda"`` for ``bart sample -g``).
    Returns ``{"out", "size_multiple", "max_abs_diff", "prior_type", "diffusion"}``.
    """
    dev = torch.device(device)
    net, meta = load_prior(prior, device=dev)
    kind = prior_kind(meta)
    if kind != "diffusion":
        raise InputError(f"{prior_files(prior)[1]}: a {kind!r} prior has no denoiser; only "
                         "diffusion priors (ve / vp / edm) export to TorchScript")
    if meta.get("data", {}).get("channels", "complex") != "complex":
        raise InputError(f"{prior_files(prior)[1]}: a magnitude prior; BART's interface takes "
                         "complex images, export a complex prior")
    if getattr(net, "cond_channels", 0):
        raise InputError(f"{prior_files(prior)[1]}: a conditional network (it needs a "
                         "conditioning image); BART's interface has none")
    patches = meta.get("patches")
    if patches and patches.get("infer"):
        raise InputError(f"{prior_files(prior)[1]}: a patch prior applied in tiles (patches."
                         "infer), whose random tile shift per call does not trace; set "
                         "patches.infer to null in the sidecar to export the whole-image form")
    inner = net.net if patches else net
    m = int(getattr(inner, "size_multiple", 1))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1 or size[0] % m or size[1] % m:
        raise InputError(f"size {size}: must be two positive multiples of {m} (the network's "
                         "size multiple)")
    wrapper = BartDenoiser(ScoreModel.from_meta(net.eval(), meta)).eval()
    x, sigma = _example(2, size, dev, 0)
    with torch.no_grad(), warnings.catch_warnings():
        # tracer notes about Python bools of valid inputs; TorchScript's deprecation notice
        # (BART 1.0 loads TorchScript, not torch.export programs)
        warnings.simplefilter("ignore")
        if patches:  # positions as a traced input, computed in the scripted shell
            from mriprior.priors.patches import position_channels

            zero = torch.zeros(2, dtype=torch.long, device=dev)
            pos = position_channels(zero, zero, size, size, patches["ref"])
            core = torch.jit.trace(_PositionDenoiser(inner, meta).eval(), (x, sigma, pos),
                                   check_trace=False)
            traced = torch.jit.script(_PaddedPositions(core, m, *patches["ref"]))
            python = wrapper  # the tiler pads and places the positions itself
        else:
            traced = torch.jit.script(_Padded(torch.jit.trace(wrapper, (x, sigma),
                                                              check_trace=False), m))
            python = _Padded(wrapper, m)
    diff = None
    if check:
        other = (size[0] + m + 1, size[1] + 2 * m + 3)  # any size: padded inside
        x2, s2 = _example(3, other, dev, 1)
        with torch.no_grad():
            want, got = python(x2, s2), traced(x2, s2)
        diff = float((want - got).abs().max())
        tol = 1e-4 * max(1.0, float(want.abs().max()))
        if not diff <= tol:
            raise InputError(f"{prior_files(prior)[1]}: the traced denoiser differs from the "
                             f"Python one on a {other} batch of 3 (max |diff| {diff:.3g}); "
                             "this network does not trace to a size-independent graph")
    info = {"convention": CONVENTION, "size_multiple": m, "prior": str(prior_files(prior)[0]),
            "diffusion": meta.get("diffusion"), "parametrisation": meta.get("parametrisation"),
            "network": meta.get("network"), "created_by": meta.get("created_by"),
            "step": meta.get("step")}
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={"mriprior.json": json.dumps(info, indent=1)})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return {"out": str(out), "size_multiple": m, "max_abs_diff": diff, "prior_type": kind,
            "diffusion": meta.get("diffusion")}

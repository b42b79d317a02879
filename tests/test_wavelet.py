"""BART-compatible dau2 wavelet thresholding."""

import shutil
import subprocess

import pytest
import torch

from mriprior.recon import wavelet as W


def bart_analysis_1d(x, h):
    """Literal transcription of BART's wavelet_down3 loop (symmetric extension), as reference."""
    n = x.shape[-1]
    b = (n + 3) // 2
    out = torch.zeros(x.shape[:-1] + (b,), dtype=x.dtype)
    for j in range(b):
        for l in range(4):
            i = 2 * j + 1 - 3 + l
            if i < 0:
                i = -i - 1
            if i >= n:
                i = n - 1 - (i - n)
            out[..., j] += x[..., i] * h[3 - l]
    return out


@pytest.mark.parametrize("n", [16, 17, 30, 31])
def test_split_matches_bart_loop(n):
    x = torch.randn(3, 5, n, dtype=torch.float64)
    ours = W._split(x, -1).reshape(3, 2, 5, -1)
    for band in range(2):
        ref = bart_analysis_1d(x, W.DAU2[0][band])
        assert torch.allclose(ours[:, band], ref, atol=1e-12)
    ours_y = W._split(x.transpose(1, 2).contiguous(), -2).reshape(3, 2, -1, 5)
    assert torch.allclose(ours_y[:, 0].transpose(1, 2), bart_analysis_1d(x, W.DAU2[0][0]),
                          atol=1e-12)


@pytest.mark.parametrize("shape", [(256, 256), (230, 180), (37, 21), (10, 300), (1, 64)])
def test_zero_threshold_is_identity(shape):
    x = torch.randn(2, *shape, dtype=torch.complex128)
    assert torch.allclose(W.wavelet_threshold(x, 0.0), x, atol=1e-12)


def test_threshold_shrinks_and_kills_small_images():
    x = torch.randn(1, 64, 64, dtype=torch.complex128)
    y = W.wavelet_threshold(x, 0.5)
    assert torch.linalg.vector_norm(y) < torch.linalg.vector_norm(x)
    assert torch.count_nonzero(W.wavelet_threshold(x, 1e6)) == 0


def test_levels_follow_bart_rule():
    # bands shrink as (n + 3) // 2 and split again while >= 16
    sizes, n = [], 256
    while True:
        n = (n + 3) // 2
        sizes.append(n)
        if n < 16:
            break
    coeffs = W.fwt(torch.zeros(1, 256, 256, dtype=torch.complex64))
    assert [t.shape[-1] for t in coeffs] == sizes + [sizes[-1]]
    assert W.wavelet_levels(256, 16) == len(sizes) + 1


def test_rand_r_matches_glibc(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot compile the glibc rand_r reference")
    src = tmp_path / "r.c"
    src.write_text('#include <stdio.h>\n#include <stdlib.h>\nint main(void){unsigned s=1;'
                   'for(int i=0;i<8;i++)printf("%d\\n",rand_r(&s));return 0;}\n')
    subprocess.run(["gcc", str(src), "-o", str(tmp_path / "r")], check=True)
    want = [int(v) for v in subprocess.run([str(tmp_path / "r")], capture_output=True,
                                           text=True, check=True).stdout.split()]
    state, got = 1, []
    for _ in range(8):
        v, state = W._rand_r(state)
        got.append(v)
    assert got == want


def test_shift_modes():
    x = torch.randn(1, 64, 64, dtype=torch.complex128)
    a = W.WaveletThreshold("bart")(x, 0.3)
    b = W.WaveletThreshold("bart")(x, 0.3)
    assert torch.equal(a, b)  # same replayed sequence
    c = W.WaveletThreshold("none")(x, 0.3)
    assert torch.allclose(c, W.wavelet_threshold(x, 0.3))
    with pytest.raises(ValueError):
        W.WaveletThreshold("sometimes")

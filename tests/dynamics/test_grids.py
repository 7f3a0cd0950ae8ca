"""Time grids: endpoints, lengths, monotonicity, where the steps crowd, and bad parameters."""

from __future__ import annotations

import pytest
import torch

import flowdiff as fd
from flowdiff.dynamics import grids
from flowdiff.dynamics.simulate import check_grid


def test_uniform_grid():
    ts = grids.uniform(0.0, 2.0, steps=4)
    assert torch.allclose(ts, torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]))
    assert ts.dtype == torch.float32
    assert grids.uniform(0.0, 1.0, 10, dtype=torch.float64).dtype == torch.float64
    backwards = grids.uniform(1.0, 0.0, 10)
    assert backwards[0] == 1.0 and backwards[-1] == 0.0 and (backwards.diff() < 0).all()
    assert fd.grids.uniform is grids.uniform


@pytest.mark.parametrize("shift", [0.3, 1.0, 3.0])
def test_shifted_grid(shift):
    ts = grids.shifted(0.0, 1.0, steps=20, shift=shift)
    assert ts.shape == (21,) and float(ts[0]) == 0.0 and float(ts[-1]) == pytest.approx(1.0)
    assert (ts.diff() > 0).all()
    check_grid(ts)
    s = grids.uniform(0.0, 1.0, 20, dtype=torch.float64)
    assert torch.allclose(ts.double(), s / (s + shift * (1 - s)), atol=1e-7)
    if shift == 1.0:
        assert torch.allclose(ts, grids.uniform(0.0, 1.0, 20))
    elif shift > 1:  # smaller steps near t = 0 (noise), larger near t = 1
        assert ts.diff()[0] < ts.diff()[-1]
    else:
        assert ts.diff()[0] > ts.diff()[-1]


@pytest.mark.parametrize(
    "rho, dtype",
    [(1.0, torch.float32), (3.0, torch.float32), (7.0, torch.float64), (7.0, torch.float32)],
)
def test_rho_grid_to_the_data_end(rho, dtype):
    ts = grids.rho(0.0, 1.0, steps=16, rho=rho, dtype=dtype)
    assert len(ts) == 17
    assert float(ts[0]) == 0.0 and float(ts[-1]) == 1.0 and (ts.diff() > 0).all()
    # (1 - t)^(1/rho) is linear in the index down to the smallest remaining time 1e-3,
    # then one last step reaches t = 1 (as Karras et al. stop at sigma_min)
    root = (1.0 - ts[:-1].double()) ** (1.0 / rho)
    assert torch.allclose(root.diff(), root.diff()[0].expand(15), atol=1e-5)
    assert float(1.0 - ts[-2].double()) == pytest.approx(1e-3, rel=1e-3)


def test_rho_grid_inside_the_interval():
    ts = grids.rho(0.0, 0.5, steps=8, rho=7.0, dtype=torch.float64)
    root = (1.0 - ts) ** (1.0 / 7.0)
    assert torch.allclose(root.diff(), root.diff()[0].expand(8), atol=1e-12)
    assert ts.diff()[-1] < ts.diff()[0]  # steps crowd towards the data end t = 1
    assert torch.allclose(grids.rho(0.0, 0.5, 8, rho=1.0), grids.uniform(0.0, 0.5, 8), atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: grids.uniform(0.0, 1.0, steps=0),
        lambda: grids.uniform(0.0, 1.0, steps=2.5),
        lambda: grids.shifted(0.0, 1.0, steps=10, shift=0.0),
        lambda: grids.shifted(0.0, 1.0, steps=-1),
        lambda: grids.rho(0.0, 1.0, steps=10, rho=-1.0),
        lambda: grids.rho(0.0, 1.0, steps=0),
    ],
)
def test_bad_grid_parameters(make):
    with pytest.raises(fd.errors.InvalidInputError):
        make()


@pytest.mark.parametrize(
    "make",
    [
        grids.uniform,
        grids.shifted,
        lambda t0, t1, steps: grids.rho(t0, t1, steps, rho=3.0),
        grids.rho,
    ],
)
def test_grids_drive_simulate(make):
    ts = make(0.0, 1.0, steps=50)
    traj = fd.simulate(fd.ODE(lambda x, t: -x), torch.ones(2, 1), ts, solver="rk4")
    assert torch.allclose(traj.final, torch.full((2, 1), 0.36787944), atol=1e-5)


def test_shifted_grid_keeps_its_endpoints_inside_the_interval():
    ts = grids.shifted(0.5, 0.9, steps=4, shift=3.0, dtype=torch.float64)
    assert float(ts[0]) == 0.5 and float(ts[-1]) == 0.9 and (ts.diff() > 0).all()
    # the same warp as on [0, 1]: these times lie on the full grid's map t = s / (s + 3 (1 - s))
    s = 3.0 * ts / (1.0 - ts + 3.0 * ts)
    assert torch.allclose(s.diff(), s.diff()[0].expand(4), atol=1e-12)


def test_rho_grid_that_starts_near_the_end_is_increasing():
    ts = grids.rho(0.9995, 1.0, steps=4)
    assert (ts.diff() > 0).all() and float(ts[-1]) == 1.0

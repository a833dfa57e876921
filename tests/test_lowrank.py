"""Reduced-rank targets: the components and the projection are the truncated SVD's."""

import numpy as np
import pytest

from core.encoding.lowrank import project, response_basis
from core.util.errors import UserError


def test_projection_is_the_truncated_svd_of_the_centred_rows():
    rng = np.random.default_rng(0)
    Y = (rng.standard_normal((50, 3)) @ rng.standard_normal((3, 300)) + 0.1 * rng.standard_normal((50, 300)) + 5.0)
    basis = response_basis(Y, 10)
    assert basis.shape == (50, 10) and basis.dtype == np.float32
    np.testing.assert_allclose(basis.T @ basis, np.eye(10), atol=1e-5)
    mean = Y.mean(0)
    u, s, vt = np.linalg.svd(Y - mean, full_matrices=False)
    for k in (1, 3, 10):
        np.testing.assert_allclose(project(Y, basis, k), (u[:, :k] * s[:k]) @ vt[:k] + mean, rtol=1e-4, atol=1e-3)
    assert response_basis(Y[:, :4], 10).shape == (50, 4)  # no more components than vertices
    assert response_basis(Y[:6], 10).shape == (6, 5)  # nor than rows - 1
    with pytest.raises(UserError, match="response rank 11"):
        project(Y, basis, 11)
    with pytest.raises(UserError, match="at least 2 rows"):
        response_basis(Y[:1], 3)

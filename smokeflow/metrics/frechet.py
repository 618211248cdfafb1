"""Fréchet distance between Gaussians fitted to two feature sets (shared by FVD and its proxies).

    FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})

The trace term is computed without a general (non-symmetric) matrix square root: with R = S_a^{1/2}
(symmetric, from an eigendecomposition), S_a S_b is similar to the symmetric PSD matrix R S_b R, so
tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i(R S_b R)). Eigenvalues that are round-off of 0 are set to 0.
This stays real and finite when covariances are singular - the usual case with fewer videos than feature
dimensions (N < D) - where ``scipy.linalg.sqrtm`` returns complex parts and needs an eps-offset retry.

From features with N < D, :func:`frechet_distance_of_features` works in sample space instead of forming
D x D matrices: with centred features A [N_a, D], B [N_b, D], S_a = A^T A / (N_a - 1) and likewise S_b, the
non-zero eigenvalues of S_a S_b are the squared singular values of A B^T / sqrt((N_a - 1)(N_b - 1)), so
tr((S_a S_b)^{1/2}) is the sum of those singular values (an N_a x N_b SVD instead of D x D eigen-
decompositions: exact, and seconds become milliseconds for 200 videos x 2560 features).
All arithmetic is float64.
"""

from __future__ import annotations

import numpy as np


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D]; N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _clean_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues that are round-off of an exact 0 (|lambda| <= D * eps * max|lambda|, the
    numpy.linalg.matrix_rank tolerance). Without this, each of the D - N + 1 null directions of a
    rank-deficient covariance adds sqrt(1e-14) ~ 1e-7 to the trace term, which adds up when N << D."""
    tolerance = eigenvalues.size * np.finfo(np.float64).eps * max(float(np.abs(eigenvalues).max(initial=0.0)), 1e-300)
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh (round-off eigenvalues set to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigenvectors * np.sqrt(_clean_eigenvalues(eigenvalues))) @ eigenvectors.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b). mu [D], sigma [D, D] -> float >= 0."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(
            f"shape mismatch: mu {mu_a.shape} / {mu_b.shape}, sigma {sigma_a.shape} / {sigma_b.shape}"
        )
    root_a = _symmetric_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt_product = float(np.sum(np.sqrt(_clean_eigenvalues(eigenvalues))))
    mean_term = float(np.sum((mu_a - mu_b) ** 2))
    distance = mean_term + float(np.trace(sigma_a) + np.trace(sigma_b)) - 2.0 * trace_sqrt_product
    # Tiny negatives are round-off of an exact 0 (identical distributions).
    return max(distance, 0.0)


def frechet_distance_of_features(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to features_a [N_a, D] and features_b [N_b, D]
    (unbiased covariances). Uses the sample-space form when fewer samples than dimensions."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D, got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"need at least 2 feature vectors per set, got {a.shape[0]} and {b.shape[0]}")
    if min(a.shape[0], b.shape[0]) >= a.shape[1]:
        return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    centred_a, centred_b = a - mean_a, b - mean_b
    scale_a, scale_b = a.shape[0] - 1.0, b.shape[0] - 1.0
    singular_values = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False)
    trace_sqrt_product = float(singular_values.sum()) / np.sqrt(scale_a * scale_b)
    trace_a = float(np.sum(centred_a**2)) / scale_a
    trace_b = float(np.sum(centred_b**2)) / scale_b
    distance = float(np.sum((mean_a - mean_b) ** 2)) + trace_a + trace_b - 2.0 * trace_sqrt_product
    return max(distance, 0.0)

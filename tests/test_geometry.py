import numpy as np
import pytest
import torch

from explorer.analysis import geometry as g
from explorer.core.errors import ExplorerError


def ref_C(S):
    """Straight from the definition: C[i][j] = S[i][j] > S[i][j+1] for 0 <= i <= j <= m-1."""
    m = len(S) - 1
    return {(i, j): bool(S[i][j] > S[i][j + 1]) for i in range(m) for j in range(i, m)}


def ref_ordinality(S, s):
    C = ref_C(S)
    vals = [c for (i, j), c in C.items() if j < i + s]
    return sum(vals) / len(vals)


def ref_spans(m):
    spans, s = [], 1
    while s <= m:
        spans.append(s)
        s *= 2
    if m not in spans:
        spans.append(m)
    return spans


def curve(R, E=8):
    t = np.arange(R) * 0.02
    P = np.zeros((R, E))
    P[:, 0], P[:, 1] = np.cos(t), np.sin(t)
    return P


def test_similarity_matrix_cosine_and_window():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(10, 5))
    S = g.similarity_matrix(P)
    for i in range(10):
        for j in range(10):
            ref = P[i] @ P[j] / np.linalg.norm(P[i]) / np.linalg.norm(P[j])
            assert S[i, j] == pytest.approx(ref, abs=1e-12)
    np.testing.assert_allclose(g.similarity_matrix(P, window=(2, 6)), S[2:7, 2:7], atol=1e-12)
    np.testing.assert_allclose(g.similarity_matrix(torch.tensor(P, dtype=torch.float32)), S, atol=1e-5)


@pytest.mark.parametrize("window", [(3, 3), (5, 2), (-1, 4), (0, 10), "ab"])
def test_bad_window(window):
    with pytest.raises(ExplorerError):
        g.similarity_matrix(np.eye(10), window=window)


def test_similarity_views():
    rng = np.random.default_rng(1)
    S = g.similarity_matrix(rng.normal(size=(6, 4)))
    np.testing.assert_allclose(g.similarity_view(S, "cosine"), S)
    mx = g.similarity_view(S, "max_normalised")
    for i in range(6):
        np.testing.assert_allclose(mx[i], S[i] / max(S[i]))
    sm = g.similarity_view(S, "softmax", logit_scale=10.0)
    ref = torch.softmax(torch.tensor(10.0 * S), dim=1).numpy()
    np.testing.assert_allclose(sm, ref, atol=1e-12)
    with pytest.raises(ExplorerError):
        g.similarity_view(S, "bogus")


@pytest.mark.parametrize("N", [2, 3, 5, 9, 17, 40])
def test_ordinality_matches_double_loop(N):
    rng = np.random.default_rng(N)
    S = g.similarity_matrix(rng.normal(size=(N, 6)))
    m = N - 1
    for s in range(1, m + 3):
        assert g.ordinality(S, s) == pytest.approx(ref_ordinality(S, min(s, m)), abs=1e-12)
    assert g.ordinality(S) == pytest.approx(ref_ordinality(S, m), abs=1e-12)
    C = ref_C(S)
    ref_viol = sorted(k for k, c in C.items() if not c)
    assert [tuple(p) for p in np.argwhere(g.violation_map(S))] == ref_viol
    V = g.violation_map(S)
    assert V.shape == (m, m)
    for i in range(m):
        for j in range(m):
            assert V[i, j] == ((i, j) in C and not C[(i, j)])


def test_ordinality_report_random_and_window():
    rng = np.random.default_rng(3)
    P = rng.normal(size=(21, 8))
    rep = g.ordinality_report(P, window=(4, 16))
    S = g.similarity_matrix(P)[4:17, 4:17]
    m = 12
    C = ref_C(S)
    assert rep["num_prototypes"] == 13 and rep["window"] == (4, 16)
    assert list(rep["spans"]) == ref_spans(m) == [1, 2, 4, 8, 12]
    for s, v in rep["spans"].items():
        assert v == pytest.approx(ref_ordinality(S, s), abs=1e-12)
    assert rep["num_pairs"] == len(C) == m * (m + 1) // 2
    assert rep["num_violations"] == sum(not c for c in C.values())
    assert rep["ordinality"] == pytest.approx(ref_ordinality(S, m))
    assert rep["violation_rate"] == pytest.approx(1 - ref_ordinality(S, m))


def test_spans_power_of_two_dedup():
    assert g.report_spans(8) == [1, 2, 4, 8]
    assert g.report_spans(1) == [1]
    assert list(g.ordinality_report(np.random.default_rng(0).normal(size=(9, 3)))["spans"]) == [1, 2, 4, 8]


def test_perfectly_ordered_curve():
    P = curve(100)
    rep = g.ordinality_report(P)
    assert rep["ordinality"] == 1.0 and rep["violation_rate"] == 0.0 and rep["num_violations"] == 0
    assert all(v == 1.0 for v in rep["spans"].values())
    assert not g.violation_map(g.similarity_matrix(P)).any()
    adj = g.adjacent_similarity(g.similarity_matrix(P))
    np.testing.assert_allclose(adj, np.cos(0.02), atol=1e-12)
    assert adj.shape == (99,)


def test_reversed_and_shuffled():
    P = curve(30)
    # reversing the rank order keeps the curve ordered
    assert g.ordinality_report(P[::-1])["ordinality"] == 1.0
    # a repeated prototype: S[i, j] == S[i, j+1] is a violation (strict >)
    Q = P.copy()
    Q[10] = Q[9]
    S = g.similarity_matrix(Q)
    assert g.violation_map(S)[0, 9] and not g.violation_map(S)[0, 8]
    # shuffled: clearly below 1, and equal to the double loop
    perm = np.random.default_rng(0).permutation(30)
    S = g.similarity_matrix(P[perm])
    o = g.ordinality(S)
    assert o < 0.8
    assert o == pytest.approx(ref_ordinality(S, 29), abs=1e-12)


def test_large_R_is_fast():
    import time

    S = g.similarity_matrix(np.random.default_rng(0).normal(size=(1000, 16)))
    t = time.perf_counter()
    rep = g.ordinality_report(np.random.default_rng(0).normal(size=(1000, 16)))
    assert time.perf_counter() - t < 2.0
    assert rep["num_pairs"] == 999 * 1000 // 2
    assert 0.3 < rep["ordinality"] < 0.7
    assert g.violation_map(S).shape == (999, 999)


def test_ordinality_errors():
    with pytest.raises(ExplorerError):
        g.ordinality_report(np.ones((1, 4)))
    with pytest.raises(ExplorerError):
        g.ordinality(np.ones((3, 4)))
    with pytest.raises(ExplorerError):
        g.ordinality(np.eye(4), span=0)
    with pytest.raises(ExplorerError):
        g.similarity_matrix(np.zeros((4, 3)))


@pytest.mark.parametrize("shape", [(25, 12), (101, 64), (6, 512)])
def test_pca_is_scikit_learns_pca(shape):
    """The projection's PCA is scikit-learn's PCA(svd_solver="full") on the normalised rows, signs included."""
    from sklearn.decomposition import PCA

    P = np.random.default_rng(shape[0]).normal(size=shape)
    X = P / np.linalg.norm(P, axis=1, keepdims=True)
    for dims in (2, 3):
        Y = g.project(P, "pca", dims=dims)
        assert Y.shape == (shape[0], dims)
        np.testing.assert_allclose(Y, PCA(n_components=dims, svd_solver="full").fit_transform(X), atol=1e-8)


@pytest.mark.slow
def test_tsne_deterministic():
    P = np.random.default_rng(2).normal(size=(20, 6))
    A = g.project(P, "tsne", dims=2, seed=3)
    B = g.project(torch.tensor(P), "tsne", dims=2, seed=3)
    assert A.shape == (20, 2) and np.all(np.isfinite(A))
    np.testing.assert_allclose(A, B)
    assert g.project(P[:3], "tsne", dims=3).shape == (3, 3)


@pytest.mark.parametrize("kw", [dict(method="lda"), dict(method="pca", dims=4), dict(method="pca", dims=1),
                                dict(method="pca", n_neighbors=5)])
def test_project_errors(kw):
    with pytest.raises(ExplorerError):
        g.project(np.random.default_rng(0).normal(size=(10, 5)), **kw)


def test_project_too_few_rows():
    with pytest.raises(ExplorerError):
        g.project(np.eye(2), "pca")


@pytest.mark.slow
def test_umap_deterministic():
    P = np.random.default_rng(4).normal(size=(30, 8))
    A = g.project(P, "umap", dims=2, seed=1)
    B = g.project(P, "umap", dims=2, seed=1)
    assert A.shape == (30, 2) and np.all(np.isfinite(A))
    np.testing.assert_allclose(A, B)
    C = g.project(P[:4], "umap", dims=3, seed=1)
    assert C.shape == (4, 3) and np.all(np.isfinite(C))

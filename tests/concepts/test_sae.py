"""Sparse dictionaries of a layer: a planted dictionary recovered (and not by the channels or a PCA), TopK and
BatchTopK sparsity, unit atoms, seeded training, the quality numbers against their closed forms, the saved file."""

from __future__ import annotations

import pytest
import torch

import filterscope as fs
from filterscope.concepts import (
    SAESettings,
    atoms_of,
    channel_basis,
    collect_vectors,
    load_dictionary,
    measure,
    pca_basis,
    recovered,
    spliced,
    stability,
    train_sae,
)
from filterscope.errors import InvalidOptionError
from filterscope.layers import resolve_layer

from ..helpers.concepts import CHANNELS, FEATURES, planted_atoms, planted_model, shapes


@pytest.fixture(scope="module")
def planted() -> tuple[fs.LoadedModel, torch.Tensor, fs.concepts.ConceptDictionary]:
    model, images = planted_model(), shapes(96)
    return model, images, fs.train_dictionary(model, "mix", images, atoms=2 * FEATURES, k=3, seed=0)


def test_a_planted_dictionary_is_recovered_and_the_channels_and_a_pca_do_not_recover_it(planted):
    model, images, found = planted
    truth = planted_atoms()
    assert recovered(truth, found.atoms) >= 0.9
    vectors = collect_vectors(model, resolve_layer(model, "mix"), images).vectors
    assert recovered(truth, channel_basis(vectors, 3).atoms) < 0.2
    assert recovered(truth, pca_basis(vectors, 3).atoms) < 0.2
    sae, channels, pca = found.quality
    assert (sae.name, channels.name, pca.name) == ("SAE", "channels", "PCA")
    assert sae.fve > channels.fve and sae.fve > pca.fve and abs(sae.l0 - 3) < 1 and sae.dead < 0.1
    assert torch.allclose(found.atoms.norm(dim=1), torch.ones(2 * FEATURES), atol=1e-5)
    assert found.held_out and set(found.held_out) <= set(range(96)) and found.vectors == (2 + 4) * 77 * 16 * 16


def test_topk_keeps_k_per_vector_batchtopk_k_on_average_and_a_seed_gives_the_same_dictionary():
    vectors = torch.randn(600, 6, generator=torch.Generator().manual_seed(3))
    settings = SAESettings(atoms=16, k=2, kind="topk", epochs=3, batch_size=128, seed=5)
    a, b = train_sae(vectors, settings), train_sae(vectors, settings)
    assert torch.equal(a.atoms, b.atoms)
    assert ((a.encode(vectors) != 0).sum(1) <= 2).all() and (a.encode(vectors) >= 0).all()
    batch = train_sae(vectors, SAESettings(atoms=16, k=2, kind="batchtopk", epochs=3, batch_size=128, seed=5))
    codes = batch.sparsify(batch.pre(batch.normalizer(vectors)), training=True)
    assert int((codes != 0).sum()) == 2 * len(vectors)  # the batch's 2 x 600 largest, however they fall
    on_average = (batch.encode(vectors) != 0).sum(1).float().mean()  # the threshold: k per vector on average
    assert float(batch.threshold) > 0 and float(on_average) == pytest.approx(2, abs=0.05)
    assert not torch.equal(train_sae(vectors, SAESettings(atoms=16, k=2, kind="topk", epochs=3, seed=6)).atoms, a.atoms)


def test_the_quality_numbers_equal_their_closed_forms():
    vectors = torch.randn(500, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    whole = measure(channel_basis(vectors, 5), vectors, 5, "all channels")
    assert whole.fve == pytest.approx(1.0, abs=1e-6) and whole.l0 == pytest.approx(5, abs=0.01) and whole.dead == 0

    class Mean:  # a user's dictionary: encode/decode only; it reconstructs every vector as the mean
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 3)

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return vectors.mean(0).expand(z.shape[0], -1)

    nothing = measure(Mean(), vectors, 3, "mean")
    assert nothing.fve == pytest.approx(0.0, abs=1e-6) and nothing.l0 == 0 and nothing.dead == 1 and nothing.dense == 0
    one = measure(channel_basis(vectors, 1), vectors, 5, "one channel")
    kept = (vectors - vectors.mean(0)).abs().amax(1).pow(2).sum()
    assert one.fve == pytest.approx(float(kept / (vectors - vectors.mean(0)).pow(2).sum()), rel=1e-5)


def test_splicing_an_exact_dictionary_changes_nothing_and_atoms_are_found_for_any_dictionary():
    model, images = planted_model(), shapes(8)
    ref = resolve_layer(model, "mix")
    exact = channel_basis(torch.zeros(1, CHANNELS), CHANNELS)
    top1, kl = spliced(model, ref, images, exact)
    assert top1 == 1.0 and kl == pytest.approx(0.0, abs=1e-6)  # float32 rounding of the exact reconstruction
    basis = pca_basis(torch.randn(200, CHANNELS), 2)

    class Plain:  # no .atoms: found by decoding one-hot codes
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return basis.encode(x)

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return basis.decode(z)

    assert torch.allclose(atoms_of(Plain(), CHANNELS).abs(), basis.atoms.abs(), atol=1e-5)
    with pytest.raises(ValueError, match="needs the number of atoms"):
        atoms_of(Plain())


def test_stability_matches_atoms_one_to_one():
    atoms = planted_atoms()
    same = stability(atoms, atoms[torch.randperm(FEATURES, generator=torch.Generator().manual_seed(1))])
    assert same.mean_cosine == pytest.approx(1.0) and same.above_09 == 1.0
    other = stability(atoms, planted_atoms(seed=9))
    assert other.mean_cosine < 0.9 and other.above_09 < 0.5


def test_a_dictionary_file_round_trips_and_bad_settings_are_named(planted, tmp_path):
    _, images, found = planted
    path = found.save(tmp_path / "mix.concepts")
    again = load_dictionary(path)
    assert torch.equal(again.encode(images[:1].permute(0, 2, 3, 1).reshape(-1, FEATURES) @ planted_atoms()),
                       found.encode(images[:1].permute(0, 2, 3, 1).reshape(-1, FEATURES) @ planted_atoms()))
    assert again.quality == found.quality and again.settings == found.settings and torch.equal(again.usage, found.usage)
    (tmp_path / "other").write_bytes(b"not a dictionary")
    with pytest.raises(InvalidOptionError, match="other is not a filterscope concept dictionary"):
        load_dictionary(tmp_path / "other")
    with pytest.raises(InvalidOptionError, match="k must be between 1 and the atoms"):
        SAESettings(atoms=4, k=5)
    with pytest.raises(InvalidOptionError, match="kind must be one of topk, batchtopk"):
        SAESettings(atoms=4, kind="relu")

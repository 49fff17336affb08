"""Tests of the three RDKit demo models and the drugs.csv input file.

Expected numbers were computed with RDKit 2026.09.1.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from rdkit import Chem

from shared.demo.models import DEMO_MODELS

DRUGS_CSV = Path(__file__).resolve().parent.parent / "shared" / "demo" / "drugs.csv"

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"

EXPECTED = {
    "demo-molweight": {
        ASPIRIN: {"mw": 180.159, "exact_mass": 180.0423, "heavy_atoms": 13},
        CAFFEINE: {"mw": 194.194, "exact_mass": 194.0804, "heavy_atoms": 14},
        IBUPROFEN: {"mw": 206.285, "exact_mass": 206.1307, "heavy_atoms": 15},
    },
    "demo-descriptors": {
        ASPIRIN: {
            "logp": 1.3101,
            "tpsa": 63.6,
            "hbd": 1,
            "hba": 3,
            "rotatable_bonds": 2,
        },
        CAFFEINE: {
            "logp": -1.0293,
            "tpsa": 61.82,
            "hbd": 0,
            "hba": 3,
            "rotatable_bonds": 0,
        },
        IBUPROFEN: {
            "logp": 3.0732,
            "tpsa": 37.3,
            "hbd": 1,
            "hba": 1,
            "rotatable_bonds": 4,
        },
    },
    "demo-qed": {
        ASPIRIN: {"qed": 0.5501},
        CAFFEINE: {"qed": 0.5385},
        IBUPROFEN: {"qed": 0.8216},
    },
}

CASES = [
    (model_id, smiles, values)
    for model_id, by_smiles in EXPECTED.items()
    for smiles, values in by_smiles.items()
]


def test_registry_lists_three_models():
    assert set(DEMO_MODELS) == {"demo-molweight", "demo-descriptors", "demo-qed"}
    assert DEMO_MODELS["demo-molweight"].execution_mode == "sync"
    assert DEMO_MODELS["demo-descriptors"].execution_mode == "async"
    assert DEMO_MODELS["demo-qed"].execution_mode == "sync"


@pytest.mark.parametrize("model_id", sorted(DEMO_MODELS))
def test_registry_key_matches_model_id(model_id):
    model = DEMO_MODELS[model_id]
    assert model.id == model_id
    assert model.description
    assert model.columns[-1] == "valid"


@pytest.mark.parametrize(("model_id", "smiles", "values"), CASES)
def test_model_values_match_known_numbers(model_id, smiles, values):
    row = DEMO_MODELS[model_id].compute(smiles)

    assert row["valid"] is True
    for key, expected in values.items():
        assert row[key] == pytest.approx(expected, abs=1e-3), key


@pytest.mark.parametrize("model_id", sorted(DEMO_MODELS))
def test_model_row_keys_and_types(model_id):
    model = DEMO_MODELS[model_id]
    row = model.compute(ASPIRIN)

    assert tuple(row) == model.columns
    for key, value in row.items():
        if key == "valid":
            assert value is True
        elif key in ("heavy_atoms", "hbd", "hba", "rotatable_bonds"):
            assert type(value) is int, key
        else:
            assert type(value) is float, key
            assert value == round(value, 4), key
    assert json.loads(json.dumps(row)) == row


@pytest.mark.parametrize("model_id", sorted(DEMO_MODELS))
@pytest.mark.parametrize("smiles", ["not a smiles", "C1CC", "", "   "])
def test_invalid_smiles_row_shape(model_id, smiles):
    model = DEMO_MODELS[model_id]
    row = model.compute(smiles)

    assert tuple(row) == model.columns
    assert row["valid"] is False
    assert all(row[key] is None for key in model.columns if key != "valid")


def test_invalid_smiles_prints_nothing(capfd):
    DEMO_MODELS["demo-molweight"].compute("C1CC(")

    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def read_drugs() -> list[dict[str, str]]:
    with DRUGS_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_drugs_csv_header():
    with DRUGS_CSV.open() as handle:
        assert handle.readline().rstrip("\n") == "smiles,name"


def test_drugs_csv_valid_and_unique():
    rows = read_drugs()
    canonical = [Chem.CanonSmiles(row["smiles"]) for row in rows]
    names = [row["name"] for row in rows]

    assert len(rows) >= 100
    assert len(set(canonical)) == len(canonical)
    assert len(set(names)) == len(names)
    assert all(names)


@pytest.mark.parametrize(
    ("name", "mw"), [("aspirin", 180.16), ("caffeine", 194.19), ("ibuprofen", 206.28)]
)
def test_drugs_csv_known_weights(name, mw):
    smiles = {row["name"]: row["smiles"] for row in read_drugs()}[name]
    row = DEMO_MODELS["demo-molweight"].compute(smiles)

    assert row["mw"] == pytest.approx(mw, abs=0.01)


def test_drugs_valid_for_all_models():
    rows = read_drugs()

    for model in DEMO_MODELS.values():
        invalid = [
            row["name"] for row in rows if not model.compute(row["smiles"])["valid"]
        ]
        assert invalid == [], model.id

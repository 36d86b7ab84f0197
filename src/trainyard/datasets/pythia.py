"""Top-vs-QCD jets simulated with Pythia 8 and clustered with FastJet, in the shared jet schema.

Signal is pp -> t tbar with W -> quarks, background is QCD 2 -> 2, both at 13 TeV with
hadronisation and, by default, without multi-parton interactions. Jets are anti-kT (R = 0.8)
on every visible final-state particle (neutrinos excluded) and kept in the pT and |eta| window
of the public top-tagging set. A signal jet counts only when the decaying top and its three
quarks (b and the W's two) all lie within ``match_radius`` of the jet axis, so "top" means a
fully contained hadronic top; every jet in the window of a QCD event is a QCD jet.

Events come from ``Pythia.nextBatch`` as awkward arrays and are clustered many events per
FastJet call, so no per-particle Python runs. FastJet clusters in rapidity; the windows and the
truth matching use pseudorapidity, as the stored columns do.

Array legend (suffixes give the shape):
    E  events of one batch
    P  particles of all events of a batch, flattened (``event_P`` says whose)
    V  visible final-state particles of a batch (their index into P)
    J  jets above the pT minimum of all events of a batch, flattened
    C  constituents of those jets, flattened (``jet_C`` says whose)
    M  constituents of the kept jets, flattened (``jet_M`` says whose)
    T  decaying tops
    X  any leading shape
    4  the top and its three quarks (top, b, q, q'); or a four-vector (E, px, py, pz)
"""

import ctypes
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from trainyard.datasets.kinematics import pt_eta_phi, wrap_phi
from trainyard.errors import DataError

GENERATOR_NAME = "pythia8-top-tagging"
GENERATOR_VERSION = 1
"""Bump when the physics or the selection changes, so older shards are not resumed into."""

SIGNAL = "signal"
BACKGROUND = "background"
PROCESSES = (SIGNAL, BACKGROUND)

_NEUTRINOS = (12, 14, 16)
_EVENTS_PER_BATCH = 100
_MAX_EVENTS_WITHOUT_JETS = 20_000
"""A process that yields no jet at all in this many events is misconfigured, not unlucky."""
_MAX_SEED = 900_000_000


@dataclass(frozen=True)
class TopTaggingSettings:
    """Physics of a top-tagging sample; recorded in every shard so a set can be remade.

    The pTHat windows suit the 550-650 GeV jet window: about 75% of the jets that land in it
    come from events inside them (most others from lower pTHat, pushed up by initial-state
    radiation) and an event yields ~0.7 jets in it (~0.45 matched tops). Widening them to
    400-800 GeV moved the mean jet mass and multiplicity by about 1 GeV and 1 particle (within
    the statistical error) at three times the cost, so the narrow windows are kept.
    """

    ecm: float = 13_000.0
    signal_pthat_min: float = 500.0
    signal_pthat_max: float = 700.0
    background_pthat_min: float = 500.0
    background_pthat_max: float = 700.0
    mpi: bool = False
    extra_pythia: tuple[str, ...] = ()
    """User strings such as "Tune:pp = 14", applied after ours to both processes."""
    jet_radius: float = 0.8
    jet_pt_min: float = 550.0
    jet_pt_max: float = 650.0
    jet_abs_eta_max: float = 2.0
    match_radius: float = 0.8

    def pythia_strings(self, process: str) -> list[str]:
        """Every Pythia setting of ``process`` except the per-shard ``Random:seed``."""
        if process == SIGNAL:
            physics = [
                "Top:gg2ttbar = on",
                "Top:qqbar2ttbar = on",
                "24:onMode = off",
                "24:onIfAny = 1 2 3 4 5",
                f"PhaseSpace:pTHatMin = {self.signal_pthat_min:g}",
                f"PhaseSpace:pTHatMax = {self.signal_pthat_max:g}",
            ]
        else:
            physics = [
                "HardQCD:all = on",
                f"PhaseSpace:pTHatMin = {self.background_pthat_min:g}",
                f"PhaseSpace:pTHatMax = {self.background_pthat_max:g}",
            ]
        return [
            "Print:quiet = on",
            "Beams:idA = 2212",
            "Beams:idB = 2212",
            f"Beams:eCM = {self.ecm:g}",
            *physics,
            f"PartonLevel:MPI = {'on' if self.mpi else 'off'}",
            "HadronLevel:all = on",
            "Random:setSeed = on",
            *self.extra_pythia,
        ]

    def problems(self) -> list[str]:
        """Impossible windows, one line each, so a bad request fails before any Pythia runs."""
        found = []
        windows = {
            "signal pTHat": (self.signal_pthat_min, self.signal_pthat_max),
            "background pTHat": (self.background_pthat_min, self.background_pthat_max),
            "jet pT": (self.jet_pt_min, self.jet_pt_max),
        }
        for name, (low, high) in windows.items():
            if not 0.0 <= low < high:
                found.append(f"the {name} window must satisfy 0 <= min < max, got {low}-{high}")
        for name in ("jet_radius", "match_radius", "jet_abs_eta_max"):
            if getattr(self, name) <= 0.0:
                found.append(f"{name} must be positive, got {getattr(self, name)}")
        return found


class Jets(NamedTuple):
    """Selected jets as flat constituent lists (massive four-vectors as pt, eta, phi, mass)."""

    num_jets: int
    jet_M: np.ndarray
    pt_M: np.ndarray
    eta_M: np.ndarray
    phi_M: np.ndarray
    mass_M: np.ndarray

    def first(self, num_jets: int) -> "Jets":
        """The first ``num_jets`` jets, in generation order."""
        is_kept_M = self.jet_M < num_jets
        return Jets(min(num_jets, self.num_jets), *(array[is_kept_M] for array in self[1:]))

    @staticmethod
    def concatenate(parts: list["Jets"]) -> "Jets":
        """Join jet lists, renumbering jets so they stay distinct."""
        offsets = np.cumsum([0, *(part.num_jets for part in parts)])
        jet_M = np.concatenate(
            [part.jet_M + offset for part, offset in zip(parts, offsets[:-1], strict=True)]
        )
        columns = (np.concatenate([part[i] for part in parts]) for i in range(2, 6))
        return Jets(int(offsets[-1]), jet_M, *columns)


def pythia_seed(seed: int, shard_index: int, process: str) -> int:
    """Pythia's seed (1..900000000) for one process of one shard, derived from the run seed."""
    state = np.random.SeedSequence([seed, shard_index, PROCESSES.index(process)])
    return int(state.generate_state(1, np.uint64)[0] % _MAX_SEED) + 1


def start_pythia(strings: list[str], *, where: str) -> Any:
    """A ready Pythia instance; bad settings or a failed ``init()`` raise a DataError.

    Pythia runs quiet, so after a failed ``init()`` the same settings are initialised once
    more, loudly, with the output captured, to quote Pythia's own reason.
    """
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    rejected, output = _capturing_stdout(
        lambda: [string for string in strings if not pythia.readString(string)]
    )
    if rejected:
        raise DataError(
            f"Pythia rejected the setting(s) {rejected} of {where} "
            f"({_pythia_reasons(output)}); check each key and value against the "
            "Pythia 8 settings index, or drop it (see --pythia)"
        )
    if pythia.init():
        return pythia
    raise DataError(
        f"Pythia's init() failed for {where}: {_init_failure_reason(strings)}. Its settings "
        f"were: {'; '.join(strings)}. Fix or remove the setting it names (see --pythia)"
    )


def _init_failure_reason(strings: list[str]) -> str:
    """Pythia's error and abort lines from an unquiet re-run of the failed initialisation."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for string in strings:
        if string != "Print:quiet = on":
            pythia.readString(string)
    for listing in ("Processes", "MultipartonInteractions", "ChangedSettings"):
        pythia.readString(f"Init:show{listing} = off")
    pythia.readString("Init:showChangedParticleData = off")
    _, output = _capturing_stdout(pythia.init)
    return _pythia_reasons(output)


def _pythia_reasons(output: str) -> str:
    """The last few error and abort lines of Pythia's output, joined into one line."""
    lines = [line.strip().rstrip(":") for line in output.splitlines()]
    reasons = [line for line in lines if line.startswith(("PYTHIA Error", "PYTHIA Abort"))]
    return " / ".join(reasons[-4:]) or "Pythia printed no reason"


def _capturing_stdout(call: Callable[[], Any]) -> tuple[Any, str]:
    """Run ``call`` with file descriptor 1, where Pythia's C++ code prints, sent to a file.

    Returns the call's result and what it printed.
    """
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+") as sink:
        sys.stdout.flush()
        libc.fflush(None)
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            result = call()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return result, sink.read()


def generate_jets(
    pythia: Any,
    process: str,
    num_jets: int,
    settings: TopTaggingSettings,
    report: Callable[[int], None],
) -> tuple[Jets, int]:
    """Run ``pythia`` until ``num_jets`` jets pass; returns them and the events it took."""
    import fastjet

    # The classic (SWIG) interface is the only one exposing FastJet's banner switch.
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    jet_definition = fastjet.JetDefinition(fastjet.antikt_algorithm, settings.jet_radius)
    parts: list[Jets] = []
    num_found = num_events = 0
    while num_found < num_jets:
        # ~2 events per jet; small requests (tests, the end of a shard) stay small.
        batch = pythia.nextBatch(min(_EVENTS_PER_BATCH, 3 * (num_jets - num_found)))
        num_events += len(batch)
        jets = _select_jets(batch, process, settings, jet_definition)
        take = min(jets.num_jets, num_jets - num_found)
        parts.append(jets.first(take))
        num_found += take
        report(take)
        if num_found == 0 and num_events >= _MAX_EVENTS_WITHOUT_JETS:
            raise DataError(
                f"no {process} jet passed the selection in {num_events} Pythia events; check "
                "the --pythia settings (beams, processes, pTHat) against the jet window"
            )
    return Jets.concatenate(parts), num_events


def _select_jets(
    batch: Any, process: str, settings: TopTaggingSettings, jet_definition: Any
) -> Jets:
    """Cluster every event of a batch and keep the jets in the window (matched, for tops)."""
    import awkward as ak
    import fastjet

    particles = batch["prt"]
    count_E = ak.to_numpy(ak.num(particles))
    flat = ak.flatten(particles)
    pid_P, status_P = ak.to_numpy(flat["id"]), ak.to_numpy(flat["status"])
    p4_P4 = np.stack([ak.to_numpy(flat["p"][name]) for name in ("e", "px", "py", "pz")], axis=-1)
    event_P = np.repeat(np.arange(len(count_E)), count_E)

    visible_V = np.flatnonzero((status_P > 0) & ~np.isin(np.abs(pid_P), _NEUTRINOS))
    visible_count_E = np.bincount(event_P[visible_V], minlength=len(count_E))
    fields = dict(zip(("E", "px", "py", "pz"), p4_P4[visible_V].T, strict=True))
    sequence = fastjet.ClusterSequence(
        ak.unflatten(ak.zip(fields), visible_count_E), jet_definition
    )
    jets = sequence.inclusive_jets(min_pt=settings.jet_pt_min)
    index = ak.flatten(sequence.constituent_index(min_pt=settings.jet_pt_min), axis=1)
    event_J = np.repeat(np.arange(len(count_E)), ak.to_numpy(ak.num(jets)))
    flat_jets = ak.flatten(jets)
    jet_p4_J4 = np.stack([ak.to_numpy(flat_jets[name]) for name in ("E", "px", "py", "pz")], -1)
    pt_J, eta_J, phi_J = pt_eta_phi(jet_p4_J4)
    is_kept_J = (pt_J < settings.jet_pt_max) & (np.abs(eta_J) < settings.jet_abs_eta_max)
    if process == SIGNAL:
        is_kept_J &= _is_top_matched(
            flat, pid_P, p4_P4, event_P, event_J, eta_J, phi_J, settings.match_radius
        )

    constituent_count_J = ak.to_numpy(ak.num(index, axis=1))
    jet_C = np.repeat(np.arange(len(pt_J)), constituent_count_J)
    visible_start_E = np.cumsum(visible_count_E) - visible_count_E
    particle_C = visible_V[visible_start_E[event_J[jet_C]] + ak.to_numpy(ak.flatten(index))]
    is_kept_C = is_kept_J[jet_C]
    particle_M = particle_C[is_kept_C]
    jet_M = (np.cumsum(is_kept_J) - 1)[jet_C[is_kept_C]]
    pt_M, eta_M, phi_M = pt_eta_phi(p4_P4[particle_M])
    mass_M = ak.to_numpy(flat["m"])[particle_M]
    return Jets(int(is_kept_J.sum()), jet_M, pt_M, eta_M, phi_M, mass_M)


def _is_top_matched(
    flat: Any,
    pid_P: np.ndarray,
    p4_P4: np.ndarray,
    event_P: np.ndarray,
    event_J: np.ndarray,
    eta_J: np.ndarray,
    phi_J: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Whether a decaying top and its b, q, q' all lie within ``radius`` of each jet.

    The decaying top is the copy whose daughters are a W and a quark (other copies radiate or
    recoil); the W is followed through its recoil copies to the copy that decays to quarks.
    """
    import awkward as ak

    start_P = np.flatnonzero(np.diff(event_P, prepend=-1))[event_P]
    first_P = ak.to_numpy(flat["daughter1"]) + start_P
    last_P = ak.to_numpy(flat["daughter2"]) + start_P
    is_w_first_P, is_w_last_P = np.abs(pid_P[first_P]) == 24, np.abs(pid_P[last_P]) == 24
    is_decay_P = (last_P > first_P) & (first_P > start_P) & (is_w_first_P | is_w_last_P)
    top_T = np.flatnonzero((np.abs(pid_P) == 6) & is_decay_P)
    is_w_first_T = is_w_first_P[top_T]
    w_T = np.where(is_w_first_T, first_P[top_T], last_P[top_T])
    b_T = np.where(is_w_first_T, last_P[top_T], first_P[top_T])
    while True:
        is_copy_T = (first_P[w_T] == last_P[w_T]) & (pid_P[first_P[w_T]] == pid_P[w_T])
        if not is_copy_T.any():
            break
        w_T = np.where(is_copy_T, first_P[w_T], w_T)
    objects_T4 = np.stack([top_T, b_T, first_P[w_T], last_P[w_T]], axis=1)
    _, eta_T4, phi_T4 = pt_eta_phi(p4_P4[objects_T4])

    distance_JT4 = np.hypot(
        eta_T4[None] - eta_J[:, None, None], wrap_phi(phi_T4[None] - phi_J[:, None, None])
    )
    is_contained_JT = (distance_JT4 < radius).all(axis=2) & (event_J[:, None] == event_P[top_T])
    return is_contained_JT.any(axis=1)

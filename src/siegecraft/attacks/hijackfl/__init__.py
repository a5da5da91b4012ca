"""HijackFL (Li et al.): hijack the federated global model with per-class input cloaks.

The attacker uploads benign updates; at its attack round it keeps a snapshot of the global model, maps
hijacking classes onto original ones, computes anchor features and one cloak per hijacking class, and
later answers the hijacking task by querying the final global model with K cloaked copies of an input.
"""

from siegecraft.attacks.hijackfl.adapter import HijackData, adapt_to_input, load_hijack_data
from siegecraft.attacks.hijackfl.adversary import HijackAdversary, HijackFL, default_attack_round
from siegecraft.attacks.hijackfl.anchors import (
    FeatureScale,
    class_confidence,
    mean_anchors,
    synthetic_anchor_inputs,
    synthetic_anchors,
)
from siegecraft.attacks.hijackfl.cloaks import (
    BlendPatterns,
    ClassSampler,
    CloakSchedule,
    CloakView,
    cloak_loss,
    search_cloaks,
)
from siegecraft.attacks.hijackfl.execution import CloakedHijacker, Hijacker, ProgramHijacker, RawHijacker
from siegecraft.attacks.hijackfl.mapping import ClassMapping, greedy_mapping, index_mapping, prediction_counts
from siegecraft.attacks.hijackfl.options import CloakOptions, HijackFLOptions, HijackOptions
from siegecraft.attacks.hijackfl.snapshot import Snapshot, frozen_model
from siegecraft.engines.federated.extensions import ATTACKS

ATTACKS.register("hijackfl")(HijackFL)

__all__ = [
    "BlendPatterns",
    "ClassMapping",
    "ClassSampler",
    "CloakOptions",
    "CloakSchedule",
    "CloakView",
    "CloakedHijacker",
    "FeatureScale",
    "HijackAdversary",
    "HijackData",
    "HijackFL",
    "HijackFLOptions",
    "HijackOptions",
    "Hijacker",
    "ProgramHijacker",
    "RawHijacker",
    "Snapshot",
    "adapt_to_input",
    "class_confidence",
    "cloak_loss",
    "default_attack_round",
    "frozen_model",
    "greedy_mapping",
    "index_mapping",
    "load_hijack_data",
    "mean_anchors",
    "prediction_counts",
    "search_cloaks",
    "synthetic_anchor_inputs",
    "synthetic_anchors",
]

"""A demonstration siegecraft plugin: one attack, one aggregator, one model and one dataset.

Importing this package registers, with the registries' decorators:

- dataset `demo_shapes`: a small deterministic synthetic image set (4 stroke shapes, 1x12x12), built offline;
- model `demo_mlp`: a one-hidden-layer perceptron (`SiegeModel`);
- attack `demo_boost`: uploads the honest update scaled by `factor`; success metric `boost_influence`;
- aggregator `demo_capped_mean`: the weighted mean after capping every update's L2 norm (not linear).

Load it with `plugins = ["siegecraft_demo_plugin"]`, `--plugin siegecraft_demo_plugin`, or an entry point in
the group `siegecraft.plugins`. docs/extending.md walks through each file.
"""

from siegecraft_demo_plugin import aggregator, attack, dataset, model  # noqa: F401

#: what this plugin registers, by registry kind (tests use it to unregister between imports)
REGISTERED = {
    "dataset": "demo_shapes",
    "model": "demo_mlp",
    "attack": "demo_boost",
    "aggregator": "demo_capped_mean",
}

"""The designs SMLT is compared against, run on the same emulated platform and the same SGD arithmetic.

- `lambdaml`: functions all-reduce through the store via ONE designated worker (O(n) traffic there).
- `cirrus`: functions push gradients to and pull the model from a long-running parameter-server process.
- `fixed_cluster`: n long-running VM workers running the same scatter-reduce, billed per VM-second.
`costing` turns measured per-iteration times into job time and cost per design; `vm_prices` holds the
documented EC2 prices and boot time the VM-billed parts use.
"""

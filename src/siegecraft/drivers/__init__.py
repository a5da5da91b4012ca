"""The drivers layer: run one experiment (`runner`), many (`matrix`, `sweep`), load plugins, the CLI."""

"""Datasets (images in [0, 1] as `ImageDataset`), their loaders and downloads, and client partitioners.

Import from the submodules: `datasets` (`DATASETS`, `load_dataset`), `image_dataset` (`ImageDataset`),
`partition` (`PARTITIONERS`, `partition`), `fetch`, `paths`. This package imports nothing, so torch-free
tools such as `python -m siegecraft.core.data.setup_system` start without torch.
"""

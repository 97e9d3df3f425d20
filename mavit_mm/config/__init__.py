"""Reading and editing OpenMMLab configs for a run: the tools' config edits (:mod:`.run_config`), dataset
checks with their fixes (:mod:`.dataset_checks`), launches on CPUs (:mod:`.launch`) and MAViT swapped into
stock configs (:mod:`.backbone_swap`, :mod:`.swap_sweep`). Above the models: it builds them."""

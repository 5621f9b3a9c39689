"""What happens to a frame between reading and the augmentations: the scan-window crop
(:mod:`.scan_window`), its cache (:mod:`.crop_cache`) and the input normalisation
(:mod:`.normalization`)."""

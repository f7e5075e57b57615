"""The training stages of talking-face video upsampling (Hegde et al., ACM MM 2022).

Only the paper's abstract is public; the stages are this project's reading of it, one DVC
stage each, each on the frozen result of the previous ones:

1. ``train_sync``: a lip-sync expert on the corpus (5 lower-half frames vs 16 mel steps),
   the loss of stage 1 and the judge of lip sync in evaluation;
2. ``train_coarse``: stage 1, the audio-visual upsampler (8x8 window + audio -> coarse frame);
3. ``train_animate``: stage 2, the identity photo animated by stage 1's frames (256 px).

:mod:`.plan` (stages, upstream networks, fingerprints), :mod:`.data` (the split in memory,
the windows drawn from it), :mod:`.recipes` (the loop's recipes), :mod:`.stages` (plan ->
run_stage).
"""

"""Networks by paper, beside the pieces both papers share.

* :mod:`.layers`: building blocks (equalised-lr layers, modulated convolutions, pixel norm);
* :mod:`.perceptual`: shift-tolerant LPIPS, a frozen network (loss and metric);
* :mod:`.checkpoint`: the one file format of every trained network (family, config, weights);
* :mod:`.face_sr`: "Face super-resolution with an ear" (G, D, Eh, El, Ea, F, and the face judge).
"""

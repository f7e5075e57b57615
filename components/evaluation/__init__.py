"""Evaluation of both papers: metrics, evaluator networks, the method comparisons, figures."""

# Direction of every metric the evaluation reports (the last part of a
# ``<split>.<method>.<metric>`` key). Here, not in a module that loads torch, so that the
# comparison of ablations reads it cheaply.
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "stlpips": False, "attr_acc": True,
                    "age_err": False, "id_acc": True, "id_cos": True, "follows_audio": True,
                    "id_acc_dlib": True, "id_dist_dlib": False,
                    # the video paper's (components/evaluation/video_sr.py)
                    "fid": False, "kid": False, "lse_c": True, "lse_d": False, "lmd": False, "lmd_mouth": False,
                    "bicubic_over_full": True}

"""See inside a trained network: activations, filters and class-activation maps (cnnlab-explain).

  layers.py       stage and layer names of any backbone, and a probe on a stage's map
  activations.py  each stage's channels for one image, tiled
  filters.py      the first convolution's kernels, and inputs that maximise deeper filters
  cam.py          Grad-CAM and HiResCAM (Captum), the pointing game and rank correlation
  source.py       the run to explain (directory, run id, models:/ URI) and the images
  report.py       all pictures for one run, made in a scratch directory, then kept and logged

What a map explains for each task (a class logit, the class head, summed pixel scores) is the
task's own declaration (`CNNTask.cam_target`, `cam_prediction`); nothing here names a task.
"""

"""DNN features: backbones, decoded image and frame caches, reduction, the extraction engine, motion energy."""

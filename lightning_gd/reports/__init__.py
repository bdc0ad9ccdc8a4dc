"""Reports of a dissection: JSON + sidecar IoU array, an offline HTML unit browser, TensorBoard, figures."""

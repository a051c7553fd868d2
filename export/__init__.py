"""PyTorch -> ONNX (fp32, fp16) -> TensorRT engine, the checks every export passes, and
``bokeh-export``.

Modules: ``onnx_graph`` (the traced pixels-to-bokeh graph), ``metadata`` (the ``dbsi.*``
metadata_props), ``fp16`` (FP16 graph for strongly typed TensorRT), ``parity`` (parity
statistics and thresholds, numpy only), ``photos`` (scikit-image's real photos, numpy only),
``checks`` (checker, shape inference, TensorRT graph
rules, ONNX Runtime against PyTorch on real photos), ``engine`` (TensorRT build and sidecar),
``interrupt`` (signals that stop an export without leaving a partial file), ``cli``.
"""

"""The lean side: numpy, OpenCV, ONNX Runtime, TensorRT + cuda-python. Never imports torch."""

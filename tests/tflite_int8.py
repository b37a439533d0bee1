"""Reading a full-integer TFLite model back for the tests: its int8 kernels and its int8 outputs."""

import numpy as np

from tfprune.interpreter import make_interpreter

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _ops(interpreter, op_names: tuple[str, ...]) -> list[tuple[dict, dict]]:
    """`(op, tensor details by index)` of the named ops, in graph order."""
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op, details) for op in interpreter._get_ops_details() if op["op_name"] in op_names]


def _invoke_int8(interpreter, x: np.ndarray) -> None:
    """Resizes the int8 input to `x`'s shape, sets `x` quantized with the input's parameters and invokes."""
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    scale_in, zero_in = inp["quantization"]
    interpreter.set_tensor(inp["index"], np.clip(np.round(x / scale_in) + zero_in, -128, 127).astype(np.int8))
    interpreter.invoke()


def int8_kernels(data: bytes) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`(op name, int8 kernel, per-channel scales)` of every conv / fully-connected op, in graph order.

    TFLite layouts: CONV_2D (out, h, w, in), DEPTHWISE_CONV_2D (1, h, w, channels), FULLY_CONNECTED (out, in).
    """
    interpreter = make_interpreter(model_content=data)
    interpreter.allocate_tensors()
    found = []
    for op, details in _ops(interpreter, WEIGHT_OPS):
        index = int(op["inputs"][1])
        tensor = details[index]
        assert tensor["dtype"] == np.int8, (op["op_name"], tensor["dtype"])
        found.append((op["op_name"], interpreter.get_tensor(index).copy(),
                      tensor["quantization_parameters"]["scales"]))
    return found


def channels(op_name: str, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (channels, values per channel) in TFLite's channel order."""
    if op_name == "DEPTHWISE_CONV_2D":
        return kernel.reshape(-1, kernel.shape[-1]).T
    return kernel.reshape(kernel.shape[0], -1)


def run_int8(data: bytes, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Runs an int8-in/int8-out TFLite model on `x` (quantized with its input parameters); dequantized
    outputs and the output step."""
    interpreter = make_interpreter(model_content=data, num_threads=1)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8, (inp["dtype"], out["dtype"])
    _invoke_int8(interpreter, x)
    out = interpreter.get_output_details()[0]
    scale_out, zero_out = out["quantization"]
    return (interpreter.get_tensor(out["index"]).astype(np.float32) - zero_out) * scale_out, scale_out


def assert_parity(data: bytes, keras_model, x: np.ndarray, same_class: float = 0.995, within: float = 0.99,
                  steps: int = 1) -> None:
    """The quantization issue's parity rule: same class, and outputs within one output step (`steps`)."""
    tflite_out, step = run_int8(data, x)
    keras_out = keras_model.predict(x, verbose=0)
    agree = np.mean(tflite_out.argmax(-1) == keras_out.argmax(-1))
    close = np.mean(np.abs(tflite_out - keras_out) <= steps * step * 1.001)
    print(f"parity: same class {agree:.4f}, within {steps} step(s) {close:.4f}")
    assert agree >= same_class, agree
    assert close >= within, close


def op_outputs(data: bytes, x: np.ndarray, op_names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """`(int8 values, dequantized values, scale)` of the outputs of the named ops (in graph order) on `x`."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the debugging option's notice
        interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    _invoke_int8(interpreter, x)
    found = []
    for op, details in _ops(interpreter, op_names):
        index = int(op["outputs"][0])
        values = interpreter.get_tensor(index)
        scale, zero = details[index]["quantization"]
        found.append((values, (values.astype(np.float32) - zero) * scale, scale))
    return found

"""`quantize_model`, `quantize_apply`, `quantize_scope`: rebuild a model with quantize-aware layers.

The rebuild follows what TFLite does with the model:
* Conv/DepthwiseConv/Dense with a linear activation whose only reader is a BatchNormalization are
  replaced by one `QuantizeFoldedBatchNorm` (the BN is folded into the quantized kernel);
* an op whose only reader is a ReLU/ReLU6 that TFLite fuses into it, or a Concatenate (which wants
  its inputs on its own scale), leaves its output unquantized: the reader's quantizer sets the range;
* a quantized layer reading a float tensor (a model input, a float layer's output) gets a
  `QuantizeLayer` before it.

Sequential and functional models (nested ones inside) come back as functional models with the
same inputs, outputs and layer names (prefixed `quant_`), uncompiled, with the original weights.

Example:
    >>> qat = quantize_model(model)
    >>> qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy"); qat.fit(x, y)
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import keras

from tfprune.quantization import configs as configs_lib
from tfprune.quantization import graph
from tfprune.quantization.annotate import QuantizeAnnotate
from tfprune.quantization.configs import LayerQuantization, UnsupportedLayerQuantizationError
from tfprune.quantization.layers import (
    QuantizeFoldedBatchNorm,
    QuantizeLayer,
    QuantizeSeparableConv,
    QuantizeWrapper,
)
from tfprune.quantization.normalization import QuantizeBatchNormalization, QuantizeNormalization
from tfprune.quantization.quantize_config import QuantizeConfig
from tfprune.quantization.schemes import (
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitScheme,
    LowBitScheme,
    get_scheme,
)


@dataclasses.dataclass
class _Plan:
    layer: Any                       # the layer to quantize (annotation removed), or an Operation
    quantized: bool
    config: QuantizeConfig | None = None
    row: LayerQuantization | None = None
    nodes: int = 0
    batchnorm: Any = None            # folded into this layer
    absorbed: bool = False           # this BN is folded into its producer
    quantize_output: bool = True


def _unwrap(op: Any) -> tuple[Any, QuantizeConfig | None, bool]:
    if isinstance(op, QuantizeAnnotate):
        return op.layer, op.quantize_config, True
    return op, None, False


def _is_linear(layer: Any) -> bool:
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _foldable_bn(layer: Any) -> bool:
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    rank = len(layer.input.shape) if hasattr(layer, "input") else None
    return axis == -1 or (rank is not None and axis == rank - 1)


def _plan(model: keras.Model, everything: bool, scheme: Default8BitScheme) -> tuple[list, dict]:
    nodes = [n for n in graph.ordered_nodes(model) if n.operation is not None and not n.is_input]
    plans: dict[int, _Plan] = {}
    for node in nodes:
        op = node.operation
        if isinstance(op, keras.layers.InputLayer):
            continue
        if id(op) in plans:
            plans[id(op)].nodes += 1
            continue
        layer, config, annotated = _unwrap(op)
        if isinstance(op, (QuantizeWrapper, QuantizeFoldedBatchNorm, QuantizeLayer, QuantizeSeparableConv,
                           QuantizeNormalization, QuantizeBatchNormalization)):
            raise ValueError(f"Layer '{op.name}' is already quantize-aware. Fix: quantize the float model.")
        quantized = everything or annotated
        plan = _Plan(layer=layer, quantized=quantized, config=config, nodes=1)
        if quantized and isinstance(layer, keras.layers.Layer) and not isinstance(layer, keras.Model):
            plan.row = scheme.layer_quantization(layer)
            if plan.config is None:
                if plan.row is None:
                    raise UnsupportedLayerQuantizationError(configs_lib.unsupported_layer_message(layer))
                plan.config = plan.row.config(layer)
        plans[id(op)] = plan

    graph_model = graph.functional_of(model)
    outputs = {id(t) for t in graph_model.outputs}
    readers: dict[int, list] = {}
    for node in nodes:
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), []).append(node)

    def only_reader(tensor: Any) -> Any:
        found = readers.get(id(tensor), [])
        return found[0] if len(found) == 1 and id(tensor) not in outputs else None

    output_tensor = {}  # id(op) -> the tensor its quantized output would be (after a folded BN)
    for node in nodes:
        plan = plans.get(id(node.operation))
        if plan is None or plan.nodes != 1 or len(node.outputs) != 1:
            continue
        output_tensor.setdefault(id(node.operation), node.outputs[0])
        row = plan.row
        if not (plan.quantized and row is not None and row.fold is not None and _is_linear(plan.layer)
                and isinstance(plan.config, configs_lib.WeightsQuantizeConfig)):
            continue
        reader = only_reader(node.outputs[0])
        if reader is None:
            continue
        bn_plan = plans.get(id(reader.operation))
        if bn_plan and bn_plan.quantized and bn_plan.nodes == 1 and _foldable_bn(bn_plan.layer) \
                and isinstance(bn_plan.config, configs_lib.OutputQuantizeConfig):
            plan.batchnorm, bn_plan.absorbed = bn_plan.layer, True
            output_tensor[id(node.operation)] = reader.outputs[0]

    for node in nodes:
        plan = plans.get(id(node.operation))
        if (plan is None or not plan.quantized or plan.absorbed or plan.nodes != 1
                or id(node.operation) not in output_tensor):
            continue
        reader = only_reader(output_tensor[id(node.operation)])
        reader_plan = plans.get(id(reader.operation)) if reader is not None else None
        if reader_plan is None or not reader_plan.quantized or reader_plan.row is None:
            continue
        fused = (plan.row is not None and plan.row.fuses_activation
                 and configs_lib.is_fused_activation(reader_plan.layer))
        if fused or reader_plan.row.same_scale_inputs:
            plan.quantize_output = False
    return nodes, plans


def _new_layer(plan: _Plan, scheme: Default8BitScheme, everything: bool, at_output: bool) -> Any:
    layer = plan.layer
    if not isinstance(layer, keras.layers.Layer):
        return layer  # a keras op inside a functional model
    if isinstance(layer, keras.Model):
        return _quantize_graph(layer, everything, scheme, inputs_quantized=True)
    copy = graph.copy_layer(layer)
    if not plan.quantized:
        return copy
    plan.config = scheme.adapt_config(plan.config, layer, at_output)
    if plan.batchnorm is not None:
        return QuantizeFoldedBatchNorm(copy, graph.copy_layer(plan.batchnorm), plan.config, fold=plan.row.fold,
                                       freeze_bn_delay=scheme.freeze_bn_delay, quantize_output=plan.quantize_output)
    if plan.row is not None and plan.row.normalization:
        return QuantizeNormalization(copy, quantize_output=plan.quantize_output)
    if isinstance(layer, keras.layers.BatchNormalization) and _foldable_bn(layer) and plan.config is not None \
            and type(plan.config) is configs_lib.OutputQuantizeConfig:
        return QuantizeBatchNormalization(copy, quantize_output=plan.quantize_output)
    if plan.row is not None and plan.row.separable and isinstance(plan.config, configs_lib.WeightsQuantizeConfig):
        return QuantizeSeparableConv(copy, plan.config, quantize_output=plan.quantize_output)
    return QuantizeWrapper(copy, plan.config, quantize_output=plan.quantize_output)


def _copy_weights(plan: _Plan, new: Any) -> None:
    if isinstance(new, keras.Model) or not isinstance(plan.layer, keras.layers.Layer):
        return
    if isinstance(new, QuantizeFoldedBatchNorm):
        graph.copy_weights(plan.layer, new.layer)
        graph.copy_weights(plan.batchnorm, new.batchnorm)
    elif isinstance(new, (QuantizeWrapper, QuantizeSeparableConv, QuantizeNormalization,
                          QuantizeBatchNormalization)):
        graph.copy_weights(plan.layer, new.layer)
    else:
        graph.copy_weights(plan.layer, new)


def _quantize_graph(model: keras.Model, everything: bool, scheme: Default8BitScheme,
                    inputs_quantized: bool = False) -> keras.Model:
    nodes, plans = _plan(model, everything, scheme)
    source = graph.functional_of(model)
    inputs = graph.fresh_inputs(model)
    values: dict[int, Any] = {id(old): new for old, new in zip(source.inputs, inputs)}
    quantized: set[int] = {id(t) for t in inputs} if inputs_quantized else set()
    input_quantizers: dict[int, Any] = {}
    built: dict[int, Any] = {}
    output_ids = {id(t) for t in source.outputs}
    at_output = set()
    for node in nodes:
        if id(node.operation) in plans and any(id(t) in output_ids for t in node.outputs):
            at_output |= {id(node.operation), id(plans[id(node.operation)].layer)}
    at_output |= {id(p.layer) for p in plans.values() if p.batchnorm is not None and id(p.batchnorm) in at_output}

    def quantize_input(tensor: Any) -> Any:
        if not isinstance(tensor, keras.KerasTensor) or id(tensor) in quantized or "float" not in str(tensor.dtype):
            return tensor
        if id(tensor) not in input_quantizers:
            name = getattr(tensor._keras_history.operation, "name", "tensor")
            quantized_tensor = QuantizeLayer(name=f"quantize_{name}")(tensor)
            quantized.add(id(quantized_tensor))
            input_quantizers[id(tensor)] = quantized_tensor
        return input_quantizers[id(tensor)]

    for node in nodes:
        op = node.operation
        if isinstance(op, keras.layers.InputLayer):
            continue
        plan = plans[id(op)]
        if plan.absorbed:
            (source_tensor,) = node.input_tensors
            values[id(node.outputs[0])] = values[id(source_tensor)]
            continue
        args, kwargs = node.arguments.fill_in(values)
        if plan.quantized:
            args, kwargs = keras.tree.map_structure(quantize_input, (args, kwargs))
        if id(op) not in built:
            built[id(op)] = _new_layer(plan, scheme, everything, id(op) in at_output or id(plan.layer) in at_output)
        outputs = built[id(op)](*args, **kwargs)
        if plan.quantized and not isinstance(plan.layer, keras.layers.Layer):
            outputs = keras.tree.map_structure(lambda t: QuantizeLayer()(t), outputs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            values[id(old)] = new
            if plan.quantized:
                quantized.add(id(new))
    result_outputs = keras.tree.pack_sequence_as(source._outputs_struct,
                                                 [values[id(t)] for t in source.outputs])
    result_inputs = inputs if isinstance(source._inputs_struct, (list, tuple)) else inputs[0]
    result = keras.Model(result_inputs, result_outputs, name=model.name)
    for op_id, new in built.items():
        _copy_weights(plans[op_id], new)
    return result


def _check_no_pruning_wrappers(model: Any, what: str) -> None:
    from tfprune.prune import collect_wrappers

    wrappers = collect_wrappers(model)
    if wrappers:
        raise ValueError(
            f"`{what}` received a model with pruning wrappers ({', '.join(w.name for w in wrappers[:3])}"
            f"{', ...' if len(wrappers) > 3 else ''}). Fix: strip them first, `tfprune.strip_pruning(model)` (with "
            "`quantize_model(model, preserve_sparsity=True)` a wrapped model is stripped for you, and its zeros are "
            "kept through QAT)."
        )


def quantize_apply(model: Any, scheme: Any = None) -> Any:
    """Quantizes the annotated layers of a model (the others stay float), or one annotated layer.

    Args:
        model: a Sequential/functional model with `QuantizeAnnotate` layers (from
            `quantize_annotate_layer` / `quantize_annotate_model`), or a single `QuantizeAnnotate`
            (for layers inside subclassed models: the returned wrapper shares the layer's weights).
            Pruning wrappers must be stripped first (`tfprune.strip_pruning`).
        scheme: a scheme instance, class or name: `Default8BitScheme` (default, also
            'Default8BitQuantizeScheme'), `Default8BitPrunePreserveQuantizeScheme` (zero weights stay
            zero) or `LowBitScheme(...)`.

    Returns:
        A new functional model (or a `QuantizeWrapper`) ready for quantization-aware training.

    Example:
        >>> quantized = quantize_apply(quantize_annotate_model(model))
        >>> pqat = quantize_apply(quantize_annotate_model(strip_pruning(pruned)),
        ...                       "Default8BitPrunePreserveQuantizeScheme")
    """
    scheme = get_scheme(scheme)
    if isinstance(model, QuantizeAnnotate):
        config = model.quantize_config
        if config is None:
            row = scheme.layer_quantization(model.layer)
            if row is None:
                raise UnsupportedLayerQuantizationError(configs_lib.unsupported_layer_message(model.layer))
            config = scheme.adapt_config(row.config(model.layer), model.layer, at_output=False)
        return QuantizeWrapper(model.layer, config)  # masks of a sparsity-preserving scheme: init_sparsity_masks
    graph.check_graph_model(model, "quantize_apply")
    _check_no_pruning_wrappers(model, "quantize_apply")
    if not any(isinstance(layer, QuantizeAnnotate) for layer in graph.all_layers(model)):
        raise ValueError(
            f"Model '{model.name}' has no annotated layer, so quantize_apply would quantize nothing. Fix: use "
            "quantize_model(model), or annotate layers with quantize_annotate_layer / quantize_annotate_model first."
        )
    result = _quantize_graph(model, everything=False, scheme=scheme)
    scheme.finalize(result)
    return result


def _scheme_for(scheme: Any, freeze_bn_delay: int | None, preserve_sparsity: bool, weight_bits: int,
                activation_bits: int) -> Default8BitScheme:
    if scheme is not None:
        if freeze_bn_delay is not None or preserve_sparsity or weight_bits != 8 or activation_bits != 8:
            raise ValueError("pass either `scheme` or `freeze_bn_delay`/`preserve_sparsity`/`weight_bits`/"
                             "`activation_bits`, not both. Fix: give the scheme these arguments, e.g. "
                             "LowBitScheme(weight_bits=4, preserve_sparsity=True).")
        return get_scheme(scheme)
    if weight_bits != 8 or activation_bits != 8:
        return LowBitScheme(weight_bits=weight_bits, activation_bits=activation_bits,
                            preserve_sparsity=preserve_sparsity, freeze_bn_delay=freeze_bn_delay)
    if preserve_sparsity:
        return Default8BitPrunePreserveQuantizeScheme(freeze_bn_delay)
    return Default8BitScheme(freeze_bn_delay)


def quantize_model(to_quantize: keras.Model, freeze_bn_delay: int | None = None, preserve_sparsity: bool = False,
                   weight_bits: int = 8, activation_bits: int = 8, scheme: Any = None) -> keras.Model:
    """Every layer of a Sequential/functional model made quantize-aware (default: TFLite's 8-bit scheme).

    Args:
        to_quantize: a built Sequential or functional model (nested models included).
        freeze_bn_delay: training steps after which folded BatchNormalization statistics freeze.
        preserve_sparsity: weights that are zero now stay exactly zero through QAT and in the int8
            TFLite kernels (pruning-preserving QAT). A model still wrapped by `prune_low_magnitude` is
            stripped first (`tfprune.strip_pruning`, masks baked in); without `preserve_sparsity` a
            wrapped model is refused.
        weight_bits: 2..8, symmetric per-channel weights (`LowBitScheme`).
        activation_bits: 2..8, asymmetric activations with learned ranges (`LowBitScheme`).
        scheme: instead of the arguments above, a scheme (instance, class or name, see `quantize_apply`).

    Raises:
        UnsupportedLayerQuantizationError: a layer with weights the scheme cannot quantize (named,
            with both fixes), before anything is built.

    Example:
        >>> qat = quantize_model(model)
        >>> qat.compile("adam", "sparse_categorical_crossentropy"); qat.fit(x, y, epochs=1)
        >>> tflite = to_tflite(qat, inference_input_type=tf.int8)
        >>> pqat = quantize_model(pruned, preserve_sparsity=True)     # zeros kept
        >>> w4a8 = quantize_model(model, weight_bits=4, activation_bits=8)
    """
    graph.check_graph_model(to_quantize, "quantize_model")
    scheme = _scheme_for(scheme, freeze_bn_delay, preserve_sparsity, weight_bits, activation_bits)
    from tfprune.prune import collect_wrappers, strip_pruning

    if collect_wrappers(to_quantize):
        if not scheme.preserve_sparsity:
            _check_no_pruning_wrappers(to_quantize, "quantize_model")
        for wrapper in collect_wrappers(to_quantize):
            if wrapper.built:
                wrapper.apply_masks()
        to_quantize = strip_pruning(to_quantize)
    for layer in graph.all_layers(to_quantize):
        if isinstance(layer, (QuantizeWrapper, QuantizeFoldedBatchNorm, QuantizeLayer, QuantizeSeparableConv,
                           QuantizeNormalization, QuantizeBatchNormalization)):
            raise ValueError(f"Layer '{layer.name}' is already quantize-aware. Fix: quantize the float model.")
        inner, config, _ = _unwrap(layer)
        if isinstance(layer, keras.layers.InputLayer) or config is not None:
            continue
        if scheme.layer_quantization(inner) is None:
            raise UnsupportedLayerQuantizationError(configs_lib.unsupported_layer_message(inner))
    result = _quantize_graph(to_quantize, everything=True, scheme=scheme)
    scheme.finalize(result)
    return result


def _custom_objects() -> dict[str, Any]:
    from tfprune.quantization import quantizers

    objects = {cls.__name__: cls for cls in (QuantizeAnnotate, QuantizeWrapper, QuantizeFoldedBatchNorm,
                                             QuantizeLayer, QuantizeSeparableConv, QuantizeNormalization,
                                             QuantizeBatchNormalization,
                                             configs_lib.WeightsQuantizeConfig,
                                             configs_lib.OutputQuantizeConfig, configs_lib.NoOpQuantizeConfig,
                                             quantizers.LastValueQuantizer, quantizers.MovingAverageQuantizer,
                                             quantizers.FixedRangeQuantizer)}
    return objects


@contextlib.contextmanager
def quantize_scope(*args: dict) -> Iterator[None]:
    """Kept for tfmot users: tfprune's quantization classes are registered, so loading needs no scope.

    Extra dicts of custom objects (your QuantizeConfig classes) are added for the `with` block.

    Example:
        >>> with quantize_scope({"MyQuantizeConfig": MyQuantizeConfig}):
        ...     model = keras.models.load_model("qat.keras")
    """
    objects = _custom_objects()
    for extra in args:
        objects.update(extra)
    with keras.saving.custom_object_scope(objects):
        yield


__all__ = ["Default8BitPrunePreserveQuantizeScheme", "Default8BitScheme", "LowBitScheme", "quantize_apply",
           "quantize_model", "quantize_scope"]

"""Fake quantization on a CNN trained on real MNIST digits: cost of 8 bits and the trend to 2."""

import copy

from autocompress.compress import materialize
from autocompress.graph import ModelGraph
from autocompress.space import SearchSpace
from autocompress.train import evaluate, recalibrate_bn


def test_bits_versus_accuracy(mnist5k, trained_mnist_cnn):
    model, _ = trained_mnist_cnn
    model = copy.deepcopy(model).eval()
    graph = ModelGraph.from_model(model, mnist5k.input_shape)
    space = SearchSpace.from_dict(graph, {"name": "bits", "defaults": {"w_bits": [2, 4, 8, 32], "a_bits": [2, 4, 8, 32]}})
    test = mnist5k.loader("test", batch_size=500)
    calibration = mnist5k.loader("train", batch_size=100, augment=False, shuffle=True, seed=0)

    float_acc = evaluate(model, test)
    accuracy = {}
    for bits in (8, 4, 2):
        quantized = materialize(model, space.uniform(w_bits=bits, a_bits=bits), space)
        recalibrate_bn(quantized, calibration, num_batches=10)  # sets the activation ranges; no training
        accuracy[bits] = evaluate(quantized, test)
    print(f"float {float_acc:.4f}, " + ", ".join(f"{b}-bit {a:.4f}" for b, a in accuracy.items()))
    assert float_acc >= 0.9
    assert accuracy[8] >= float_acc - 0.01
    # fewer bits never help (a 2-sample tie-breaking allowance on 1,000 test digits)
    assert accuracy[4] <= accuracy[8] + 0.002
    assert accuracy[2] <= accuracy[4] + 0.002
    assert accuracy[2] < accuracy[8]

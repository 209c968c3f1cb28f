"""The seed network is the tutorial's, layer for layer."""

import torch
import torch.nn.functional as F

from pawnet.models import SeedNet, inference_batch, loss_fn, probabilities


def test_seed_has_the_tutorials_parameter_count():
    # Keras's model.summary() for the tutorial: 896 + 9,248 + 802,944 + 129.
    model = SeedNet()
    assert sum(p.numel() for p in model.parameters()) == 813_217


def test_pooling_before_relu_is_the_same_function():
    torch.manual_seed(0)
    model = SeedNet().eval()
    x = torch.rand(4, 3, 64, 64) * 255
    h = model.rescale(x)
    h = model.pool1(F.relu(model.conv1(h)))  # the tutorial's order
    h = model.pool2(F.relu(model.conv2(h)))
    expected = model.output(F.relu(model.dense(model.flatten(h))))
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_keras_initialisation():
    model = SeedNet()
    w = model.dense.weight
    limit = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= limit and w.abs().max() > 0.9 * limit
    assert all((m.bias == 0).all() for m in (model.conv1, model.conv2, model.dense, model.output))


def test_sigmoid_head_gives_a_probability_per_class():
    model = SeedNet()
    logits = torch.tensor([[0.0], [10.0], [-10.0]])
    p = probabilities(model, logits)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert p[1].argmax() == 1 and p[2].argmax() == 0


def test_weighted_loss_counts_the_rare_class_more():
    model = SeedNet()
    logits = torch.zeros(4, 1)
    labels = torch.tensor([0, 0, 0, 1])
    plain = loss_fn(model, logits, labels)
    weighted = loss_fn(model, logits, labels, torch.tensor([1.0, 3.0]))
    assert torch.allclose(plain, weighted)  # all predictions equally wrong: weights change nothing
    logits = torch.tensor([[-2.0], [-2.0], [-2.0], [-2.0]])  # right on class 0, wrong on class 1
    assert loss_fn(model, logits, labels, torch.tensor([1.0, 3.0])) > loss_fn(model, logits, labels)


def test_inference_batches_stay_small_enough_for_the_allocator_to_keep_them():
    # About 3 MB of float input a batch: 4 photos of EfficientNet-Lite0's 256 px, 64 of small's
    # 64 px, and never none.
    assert inference_batch(256) == 4
    assert inference_batch(64) == 64
    assert inference_batch(4096) == 1

"""Binary classification with one sigmoid logit: loss and metrics against hand-computed values."""

import math

import pytest
import torch

from cnnlab.tasks.classification import ClassificationTask


@pytest.fixture
def sigmoid_task(make_task_arguments):
    return ClassificationTask(**make_task_arguments("simple_cnn", num_classes=2), binary_mode="sigmoid")


def test_sigmoid_mode_loss_is_binary_cross_entropy(sigmoid_task):
    logits, labels = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 0, 0])
    expected = (
        -(
            math.log(1 / (1 + math.exp(-2)))
            + math.log(1 - 1 / (1 + math.exp(1)))
            + math.log(1 - 1 / (1 + math.exp(-0.5)))
        )
        / 3
    )
    assert sigmoid_task.loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_sigmoid_mode_metrics(sigmoid_task):
    logits, labels = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]]), torch.tensor([1, 0, 0, 1])
    sigmoid_task.val_metrics.update(sigmoid_task.metric_input(logits), labels)
    scores = {k: v.item() for k, v in sigmoid_task.val_metrics.compute().items()}
    # predicted 1, 0, 1, 0: right on the first two; positive class: TP 1, FP 1, FN 1 -> F1 1/2
    assert scores["val/acc"] == pytest.approx(0.5)
    assert scores["val/f1"] == pytest.approx(0.5)
    # positives score 2 and -3, negatives -1 and 0.5: 2 of the 4 (positive, negative) pairs ranked right
    assert scores["val/auroc"] == pytest.approx(0.5)
    probabilities = sigmoid_task.probabilities(logits)
    assert probabilities.shape == (4, 2) and probabilities.argmax(1).tolist() == [1, 0, 1, 0]


def test_softmax_mode_keeps_two_logits_and_its_metric_names(make_task_arguments):
    task = ClassificationTask(**make_task_arguments("simple_cnn", num_classes=2))
    assert task(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    task.val_metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert task.val_metrics.compute()["val/acc"].item() == pytest.approx(0.5)
    assert set(task.val_metrics.compute()) == {"val/acc", "val/f1_macro"}

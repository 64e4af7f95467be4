"""LeNet-5 style CNN (LeCun et al. 1998) with ReLU and max pooling.

The classifier size depends on the input resolution, so the builder takes
``input_size``: for 28x28 (MNIST) the first conv pads by 2, giving the classic
16x5x5 flatten; for 32x32 it does not pad and gives the same 16x5x5.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model

__all__ = ["LeNet5", "lenet5"]


def _conv_out(size: int, kernel: int, padding: int = 0) -> int:
    return size + 2 * padding - kernel + 1


class LeNet5(nn.Module):
    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 1, input_size: int = 28
    ) -> None:
        super().__init__()
        padding = 2 if input_size < 32 else 0
        spatial = _conv_out(input_size, 5, padding) // 2
        spatial = _conv_out(spatial, 5) // 2
        if spatial < 1:
            raise ValueError(f"input_size={input_size} is too small for LeNet-5 (need >= 16)")
        self.input_size = input_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(16 * spatial * spatial, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


@register_model("lenet5", family="lenet")
def lenet5(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """LeNet-5 for ``input_size`` x ``input_size`` images (28 for MNIST, 32 for CIFAR)."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels, input_size=input_size)

"""PyTorch models used as the oracle: torchvision's resnet50 itself, and a module
that reproduces the Keras applications ResNet50 (v1) in torch, each with a
function that names its tensors the way resnetd's weight files name them.

Run with Debian's python3 (/usr/bin/python3), which has python3-torch 1.13.
"""
import torch
import torch.nn as nn
import torchvision

STAGES = [(3, 64), (4, 128), (6, 256), (3, 512)]


class KerasBottleneck(nn.Module):
    """Keras ResNet50 block: stride on the first 1x1 conv, conv bias, eps 1.001e-5."""

    def __init__(self, cin, f, stride, shortcut):
        super().__init__()
        eps = 1.001e-5
        self.conv1 = nn.Conv2d(cin, f, 1, stride, 0, bias=True)
        self.bn1 = nn.BatchNorm2d(f, eps=eps)
        self.conv2 = nn.Conv2d(f, f, 3, 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(f, eps=eps)
        self.conv3 = nn.Conv2d(f, 4 * f, 1, 1, 0, bias=True)
        self.bn3 = nn.BatchNorm2d(4 * f, eps=eps)
        self.relu = nn.ReLU()
        self.downsample = None
        if shortcut:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * f, 1, stride, 0, bias=True),
                                            nn.BatchNorm2d(4 * f, eps=eps))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        sc = self.downsample(x) if self.downsample is not None else x
        return self.relu(y + sc)


class Head(nn.Module):
    """Global average pool -> [dense(hidden) -> ReLU] -> dropout -> dense(classes)."""

    def __init__(self, classes, hidden=0, dropout=0.0):
        super().__init__()
        self.hidden = nn.Linear(2048, hidden) if hidden else None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden if hidden else 2048, classes)

    def forward(self, feat):
        if self.hidden is not None:
            feat = torch.relu(self.hidden(feat))
        return self.fc(self.drop(feat))


class KerasResNet50(nn.Module):
    """The Keras applications ResNet50 graph; padding 3 / pool padding 1 equal
    Keras's explicit ZeroPadding2D layers (the pool follows a ReLU)."""

    def __init__(self, classes, hidden=0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=True)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        layers = []
        for s, (blocks, f) in enumerate(STAGES):
            mods = []
            for b in range(blocks):
                stride = 2 if (b == 0 and s > 0) else 1
                mods.append(KerasBottleneck(cin, f, stride, b == 0))
                cin = 4 * f
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.head = Head(classes, hidden)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(x.mean((2, 3)))


class TorchvisionResNet50(nn.Module):
    """torchvision.models.resnet50 with resnetd's replaceable head."""

    def __init__(self, classes, hidden=0):
        super().__init__()
        self.net = torchvision.models.resnet50(weights=None)
        self.net.fc = nn.Identity()
        self.head = Head(classes, hidden)

    def forward(self, x):
        return self.head(self.net(x))


def build(variant, classes, hidden=0):
    return KerasResNet50(classes, hidden) if variant == "keras" else TorchvisionResNet50(classes, hidden)


def keras_layer_name(tname):
    """'layer2.0.conv1' -> 'conv3_block1_1_conv' (module path without the net prefix)."""
    parts = tname.split(".")
    if parts[0] == "conv1":
        return "conv1_conv"
    if parts[0] == "bn1":
        return "conv1_bn"
    stage = int(parts[0][5:]) + 1
    block = int(parts[1]) + 1
    base = "conv%d_block%d" % (stage, block)
    if parts[2] == "downsample":
        return base + ("_0_conv" if parts[3] == "0" else "_0_bn")
    kind, idx = parts[2][:-1], parts[2][-1]
    return "%s_%s_%s" % (base, idx, "conv" if kind == "conv" else "bn")


KERAS_SUFFIX = {("conv", "weight"): "kernel", ("conv", "bias"): "bias",
                ("bn", "weight"): "gamma", ("bn", "bias"): "beta",
                ("bn", "running_mean"): "moving_mean", ("bn", "running_var"): "moving_variance",
                ("dense", "weight"): "kernel", ("dense", "bias"): "bias"}


def named_tensors(model, variant, which="params"):
    """Yields (file name, numpy array in the file's layout, module, torch tensor) for
    every parameter (which='params', running statistics included) or gradient
    (which='grads', trainable parameters only) of model, in resnetd's naming:
    torchvision state-dict names/layouts for 'torchvision', Keras names/layouts for 'keras'."""
    keras = variant == "keras"
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            kind = "conv"
        elif isinstance(mod, nn.BatchNorm2d):
            kind = "bn"
        elif isinstance(mod, nn.Linear):
            kind = "dense"
        else:
            continue
        path = mname[4:] if mname.startswith("net.") else mname
        if path.startswith("head."):
            tname = "fc" if path == "head.fc" else "head.hidden"
            kname = "predictions" if path == "head.fc" else "head_hidden"
        else:
            tname, kname = path, keras_layer_name(path)
        entries = [("weight", mod.weight), ("bias", mod.bias)]
        if kind == "bn" and which == "params":
            entries += [("running_mean", mod.running_mean), ("running_var", mod.running_var)]
        for suffix, t in entries:
            if t is None:
                continue
            if which == "grads":
                if not t.requires_grad:
                    continue
                t = t.grad
            a = t.detach().float().numpy()
            if keras and suffix == "weight" and kind == "conv":
                a = a.transpose(2, 3, 1, 0)
            elif keras and suffix == "weight" and kind == "dense":
                a = a.T
            name = ("%s.%s" % (kname, KERAS_SUFFIX[(kind, suffix)]) if keras
                    else "%s.%s" % (tname, suffix))
            yield name, a.copy(), mod, t

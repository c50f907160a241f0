"""PyTorch reference for `benchmarks/stylize.py`: the same Gatys style-transfer iteration in plain torch.

    pip install 'gafu[torch]'      # (or any torch >= 2.5; this script imports nothing of gafu, and no torchvision)
    python benchmarks/stylize_torch.py --size 170x256 --optimizer adam --iters 5

Speed only: VGG-16's conv stack (torchvision's layout, `nn.Conv2d` 3x3 padding 1, ReLU, average pooling) with
random weights, fed random content and style images of the given size. The loss is gafu's `gatys` preset:
relu4_2 content MSE x 5, Gram MSE of relu1_1..relu5_1 x 100 (Grams divided by C*H*W), TV x 1e-3, the gradient
taken w.r.t. the image only. `adam` is torch.optim.Adam (lr 4, clamp to 0..255); `lbfgs` is torch.optim.LBFGS
with one loss+gradient evaluation per iteration and no line search (jcjohnson/neural-style's setting). Prints
one JSON line: median seconds per iteration over `--iters` after 2 warm-up iterations.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from torch import nn

VGG16 = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
CONTENT, STYLES = "relu4_2", tuple(f"relu{b}_1" for b in range(1, 6))


def vgg16_features(gen: torch.Generator) -> nn.ModuleDict:
    """conv{b}_{i} -> nn.Conv2d with He-scaled random weights (no gradient: the loss network is fixed)."""
    convs, cin = {}, 3
    for b, (c, n) in enumerate(VGG16, 1):
        for i in range(1, n + 1):
            conv = nn.Conv2d(cin, c, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (9 * cin)) ** 0.5)
                conv.bias.zero_()
            convs[f"conv{b}_{i}"] = conv.requires_grad_(False)
            cin = c
    return nn.ModuleDict(convs)


def taps(net: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """relu taps up to relu5_1 (the deepest the loss needs)."""
    out = {}
    for name, conv in net.items():
        x = torch.relu(conv(x))
        out["relu" + name[4:]] = x
        if name == "conv5_1":
            return out
        b, i = int(name[4]), int(name[6])
        if i == VGG16[b - 1][1]:
            x = nn.functional.avg_pool2d(x, 2)
    return out


def gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def loss_fn(net, img, content, grams):
    f = taps(net, img)
    loss = 5.0 * torch.mean((f[CONTENT] - content) ** 2)
    loss = loss + 100.0 * sum(torch.mean((gram(f[t]) - grams[t]) ** 2) for t in STYLES)
    tv = 0.5 * (((img[:, :, 1:] - img[:, :, :-1]) ** 2).sum() + ((img[..., 1:] - img[..., :-1]) ** 2).sum())
    return loss + 1e-3 * tv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="170x256", help="HxW of the image")
    ap.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = map(int, args.size.split("x"))
    gen = torch.Generator().manual_seed(0)
    net = vgg16_features(gen)
    with torch.no_grad():
        content = taps(net, torch.rand(1, 3, h, w, generator=gen))[CONTENT]
        grams = {t: gram(f) for t, f in taps(net, torch.rand(1, 3, h, w, generator=gen)).items() if t in STYLES}
    img = (120.0 + 40.0 * (torch.rand(1, 3, h, w, generator=gen) - 0.5)).requires_grad_(True)

    def closure():
        opt.zero_grad()
        loss = loss_fn(net, img / 255.0, content, grams)
        loss.backward()
        return loss

    if args.optimizer == "adam":
        opt = torch.optim.Adam([img], lr=4.0)

        def iterate():
            opt.step(closure)
            with torch.no_grad():
                img.clamp_(0.0, 255.0)
    else:
        opt = torch.optim.LBFGS([img], lr=1.0, max_iter=1, history_size=10, line_search_fn=None)

        def iterate():
            opt.step(closure)

    ts = []
    for k in range(2 + args.iters):
        t = time.perf_counter()
        iterate()
        if k >= 2:
            ts.append(time.perf_counter() - t)
    print(json.dumps(dict(size=[h, w], optimizer=args.optimizer, s_per_iter=statistics.median(ts),
                          threads=torch.get_num_threads(), torch=torch.__version__,
                          peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


if __name__ == "__main__":
    main()

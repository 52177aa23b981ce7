"""PyTorch timings of flmm-bench's model rows, on this machine, for comparison with ours.

    make exporter-venv            # once: a venv with torch and segment_anything
    .venv-exporter/bin/python Benchmarks/pytorch_reference.py [--only unet|sam_decoder|sam_vit_b]

It times the same workloads as Sources/flmm-bench (UNetBench.swift, SAMBench.swift), on 1 and
2 threads (torch.set_num_threads), and prints one line per measurement in flmm-bench's form:

    bench <name> backend=pytorch threads=<n> ms=<median>

- unet_step_c384, unet_step_c1024: F-LMM's UNetHead (mmseg UNet as F-LMM configures it: 4 stages,
  base 64, 2 convs per block, GroupNorm(1), InterpConv, normalize_input, upsample_input 64) on
  attention maps [3, C, 24, 24]: forward, sum(y * upstream), backward. Written here from mmseg's
  semantics (mmseg itself is not needed).
- sam_decoder_step: segment_anything's ViT-B PromptEncoder + MaskDecoder, 3 masks, each with a box,
  a 256x256 mask prompt and 5 text tokens appended to the sparse prompts, a 64x64x256 image
  embedding, multimask_output=False: forward, sum(low_res * upstream) + sum(iou), backward.
- sam_vit_b_forward: segment_anything's ViT-B ImageEncoderViT on one 1024x1024 image, no grad.

Weights and inputs are random (timings do not depend on them).
"""
import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def stub_torchvision_if_missing():
    """segment_anything's package __init__ imports torchvision (for its predictor and mask
    generator, which this script does not use); PyPI's CUDA torchvision does not load next to a
    CPU torch. The exporter tests' stand-in (Exporter/tests/tv_stub.py) is installed then."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "Exporter" / "tests"))
    import tv_stub
    tv_stub.install_if_missing()


# ---- F-LMM's UNetHead (mmseg UNet semantics) ----

class ConvGNReLU(nn.Sequential):
    """mmseg ConvModule: conv (no bias, a norm follows) + GroupNorm(1) + ReLU."""

    def __init__(self, cin, cout, k):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(1, cout), nn.ReLU())


class ConvBlock(nn.Sequential):
    """mmseg BasicConvBlock: `num_convs` 3x3 ConvModules."""

    def __init__(self, cin, cout, num_convs=2):
        super().__init__(*[ConvGNReLU(cin if i == 0 else cout, cout, 3) for i in range(num_convs)])


class InterpConv(nn.Module):
    """mmseg InterpConv: bilinear x2 (align_corners=False), then a 1x1 ConvModule."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = ConvGNReLU(cin, cout, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class UpConvBlock(nn.Module):
    """mmseg UpConvBlock: upsample x to the skip's channels, cat([skip, x]), BasicConvBlock."""

    def __init__(self, cin, skip, cout):
        super().__init__()
        self.upsample = InterpConv(cin, skip)
        self.conv_block = ConvBlock(2 * skip, cout)

    def forward(self, skip, x):
        return self.conv_block(torch.cat([skip, self.upsample(x)], dim=1))


class UNetHead(nn.Module):
    def __init__(self, in_channels, base=64, stages=4, upsample_input=64):
        super().__init__()
        self.upsample_input = upsample_input
        self.encoder = nn.ModuleList()
        for i in range(stages):
            block = ConvBlock(in_channels if i == 0 else base * 2 ** (i - 1), base * 2 ** i)
            self.encoder.append(block if i == 0 else nn.Sequential(nn.MaxPool2d(2), block))
        self.decoder = nn.ModuleList(UpConvBlock(base * 2 ** i, base * 2 ** (i - 1), base * 2 ** (i - 1))
                                     for i in range(1, stages))
        self.conv_seg = nn.Conv2d(base, 1, 1)
        self.divisor = 2 ** (stages - 1)

    def forward(self, x):
        x = x / x.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-12)          # normalize_input
        h, w = x.shape[-2:]
        scale = max(1.0, self.upsample_input / max(h, w))                     # upsample_input
        x = F.interpolate(x, scale_factor=scale, mode="bilinear")
        h, w = x.shape[-2:]
        ph, pw = -h % self.divisor, -w % self.divisor
        x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](skips[i], x)
        return self.conv_seg(x)[..., :h, :w]


def unet_step(channels):
    torch.manual_seed(3)
    head = UNetHead(channels)
    x = torch.rand(3, channels, 24, 24)
    upstream = torch.randn(3, 1, 64, 64)

    def run():
        head.zero_grad(set_to_none=False)
        y = head(x)
        (y * upstream).sum().backward()
    return run


# ---- SAM (segment_anything) ----

def sam_decoder_step(masks=3, text_tokens=5):
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    torch.manual_seed(11)
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                       mask_in_chans=16)
    dec = MaskDecoder(num_multimask_outputs=3,
                      transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                      transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    emb = torch.randn(1, 256, 64, 64)
    boxes = []
    for _ in range(masks):
        x0, y0 = 500 * torch.rand(()).item(), 500 * torch.rand(()).item()
        boxes.append(torch.tensor([[[x0, y0, x0 + 300, y0 + 400]]]))
    mask_prompts = [(3 * torch.randn(1, 1, 256, 256)).requires_grad_() for _ in range(masks)]
    texts = [torch.randn(text_tokens, 256, requires_grad=True) for _ in range(masks)]
    upstream = torch.randn(1, 1, 256, 256)
    params = list(pe.parameters()) + list(dec.parameters()) + mask_prompts + texts

    def run():
        for p in params:
            p.grad = None
        dense_pe = pe.get_dense_pe()
        loss = 0
        for i in range(masks):
            sparse, dense = pe(points=None, boxes=boxes[i], masks=mask_prompts[i])
            sparse = torch.cat([sparse, texts[i][None]], dim=1)
            low, iou = dec(image_embeddings=emb, image_pe=dense_pe, sparse_prompt_embeddings=sparse,
                           dense_prompt_embeddings=dense, multimask_output=False)
            loss = loss + (low * upstream).sum() + iou.sum()
        loss.backward()
    return run


def sam_vit_b_forward():
    from segment_anything.modeling import ImageEncoderViT
    torch.manual_seed(12)
    enc = ImageEncoderViT(depth=12, embed_dim=768, img_size=1024, mlp_ratio=4,
                          norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=12, patch_size=16,
                          qkv_bias=True, use_rel_pos=True, global_attn_indexes=[2, 5, 8, 11],
                          window_size=14, out_chans=256).eval()
    image = torch.randn(1, 3, 1024, 1024)

    def run():
        with torch.no_grad():
            enc(image)
    return run


def measure(name, make, threads, warmup, samples):
    run = make()
    for t in threads:
        torch.set_num_threads(t)
        for _ in range(warmup):
            run()
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"bench {name} backend=pytorch threads={t} ms={statistics.median(times):.1f}", flush=True)
        print(f"# {name} threads={t}: min {min(times):.1f} ms over {samples}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["unet", "sam_decoder", "sam_vit_b"])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"# torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}", flush=True)
    if args.only in (None, "unet"):
        for c in (384, 1024):
            measure(f"unet_step_c{c}", partial(unet_step, c), threads, warmup=1, samples=5)
    if args.only in (None, "sam_decoder", "sam_vit_b"):
        stub_torchvision_if_missing()
    if args.only in (None, "sam_decoder"):
        measure("sam_decoder_step", sam_decoder_step, threads, warmup=1, samples=5)
    if args.only in (None, "sam_vit_b"):
        measure("sam_vit_b_forward", sam_vit_b_forward, threads, warmup=0, samples=1)


if __name__ == "__main__":
    main()

"""transnet_cpu: TransNetV2's forward pass (the package's network and weights) laid out for the CPU.

The package runs each (2+1)-D convolution as two `Conv3d` calls; PyTorch has no oneDNN kernel for
the dilated temporal ones (they fall to `slow_conv3d`, ~22 % of the time) and runs the rest
channels-first. `FastTransNetV2` runs the 1x3x3 spatial convolutions as `conv2d` over frames and the
dilated 3x1x1 temporal ones as `conv2d` over [time, pixels], all channels-last, with the batch norm
folded into the temporal weights: 1.8x faster per frame in fp32 (outputs equal to 1e-7), and bf16
under autocast where the CPU has it (shots.py decides the precision and checks near-threshold frames).

"int8" runs the spatial convolutions (three quarters of the bf16 time) as oneDNN uint8 x int8
convolutions, the rest as "bf16". Weights: int8 per output channel (symmetric, max |w| -> 127).
Activations: every spatial convolution's input is non-negative (pixels, ReLU outputs, their sums and
averages), quantised per call to uint8 with scale max(x) / 255, zero point 0, so no calibration data
and no fixed ranges are involved; the network's first input is the uint8 frames themselves (scale
1/255, exact). One 200-frame window of real footage on this CPU's AVX-512 VNNI, one thread: 0.93 s in
bf16 -> 0.69 s (the int8 convolutions run near the core's int8 peak, ~60 multiply-adds per cycle;
probabilities within 0.004 of fp32 on that window, 0.024 at most on the real test clips with fades).
Splitting the stacked spatial convolution per branch (no strided copies into the temporal ones) and
fusing the ReLU into the temporal convolutions (oneDNN post-op) were measured and gave nothing here.

`WindowPass` runs the same network over a long window a step of frames at a time, each cell keeping
the few frames its temporal convolutions reach into the next step: the shot detector's 650-frame
windows cost per frame what a short window does, and run while their frames still decode.
"""

from __future__ import annotations

from collections.abc import Callable

TN_H, TN_W = 27, 48  # TransNetV2's input size
DILATIONS = (1, 2, 4, 8)  # TransNetV2's four temporal branches per DDCNN block
UINT8_MAX = 255
INT8_MAX = 127
HALO = max(DILATIONS)  # frames a DDCNN cell's temporal convolutions reach on each side
WINDOW_CHUNK = 150  # frames per step of a WindowPass: per frame as fast as a short window alone; beside the decode, 150 beat 50 and 300 (fewer, larger calls)


class FastTransNetV2:
    """TransNetV2's forward pass (same weights, same function) laid out for fast CPU convolutions.

    Per DDCNN block the package computes, for each dilation d in (1, 2, 4, 8),
    Conv3d(1x3x3) -> Conv3d(3x1x1, dilation d), concatenates the four branches and applies BatchNorm.
    Here: x [B*T, C, H, W] channels-last -> conv2d 3x3 (spatial) -> view as [B, 2F, T, H*W] (the same
    memory) -> conv2d 3x1 with dilation (d, 1) (temporal, BatchNorm folded in) -> [B, T, H*W, F].
    """

    def __init__(self, package_model, precision: str = "fp32"):
        import torch

        self.net, self.precision = package_model, precision
        self.blocks = []  # per SDDCNN: [(spatial weights, temporal weights, temporal biases)] * 2
        self.int8_spatial = []  # per SDDCNN: [Int8Convolution] * 2 (precision "int8" only)
        with torch.no_grad():
            for sddcnn in package_model.SDDCNN:
                self.blocks.append([self._fold(ddcnn) for ddcnn in sddcnn.DDCNN])
                if precision == "int8":
                    self.int8_spatial.append([Int8Convolution(spatial) for spatial, _, _ in self.blocks[-1]])

    @staticmethod
    def _fold(ddcnn):
        import torch

        cl = torch.channels_last
        bn = ddcnn.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [4F]
        shift = bn.bias - bn.running_mean * scale
        spatial, temporal, bias = [], [], []
        for i, branch in enumerate((ddcnn.Conv3D_1, ddcnn.Conv3D_2, ddcnn.Conv3D_4, ddcnn.Conv3D_8)):
            conv_s, conv_t = branch.layers
            f = conv_t.weight.shape[0]
            sl = slice(i * f, (i + 1) * f)
            spatial.append(conv_s.weight[:, :, 0].contiguous(memory_format=cl))  # [2F, Cin, 3, 3]
            w = conv_t.weight[..., 0] * scale[sl].view(-1, 1, 1, 1)  # [F, 2F, 3, 1]
            b = shift[sl] + (conv_t.bias * scale[sl] if conv_t.bias is not None else 0)
            temporal.append(w.contiguous(memory_format=cl))
            bias.append(b.contiguous())
        # The four branches read the same input: one convolution with their filters stacked
        # [4 * 2F, Cin, 3, 3] is one larger GEMM instead of four small ones.
        return torch.cat(spatial).contiguous(memory_format=cl), temporal, bias

    @staticmethod
    def _ddcnn(x, params, relu: bool, b: int, t: int, int8_spatial=None, x_scale: float | None = None):
        """x [B*T, C, H, W] channels-last -> [B*T, 4F, H, W] channels-last.

        With `int8_spatial` (an Int8Convolution) the spatial convolution runs in int8 (output bf16);
        x is then non-negative, or uint8 with its scale `x_scale`."""
        import torch
        import torch.nn.functional as F

        spatial, temporal, bias = params
        if int8_spatial is None:
            ys = F.conv2d(x, spatial, padding=1)  # [B*T, 4 * 2F, H, W], the four branches' spatial outputs
        else:
            ys = int8_spatial(x, x_scale)
        n, c8, h, w = ys.shape
        ys = ys.permute(0, 2, 3, 1).reshape(b, t, h * w, c8)  # [B, T, H*W, 4 * 2F], no copy
        c2 = c8 // 4
        outs = []
        for i, (wt, bt, d) in enumerate(zip(temporal, bias, DILATIONS)):
            y = ys[..., i * c2:(i + 1) * c2].permute(0, 3, 1, 2)  # [B, 2F, T, H*W], a view
            z = F.conv2d(y, wt, bt.to(y.dtype), padding=(d, 0), dilation=(d, 1))  # [B, F, T, H*W]
            outs.append(z.permute(0, 2, 3, 1))  # [B, T, H*W, F]
        z = torch.cat(outs, -1)
        if relu:
            z = F.relu(z)
        return z.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def network_input(frames, precision: str):
        """uint8 frames [N, 27, 48, 3] -> (x [N, 3, 27, 48] channels-last, its int8 scale or None)."""
        import torch

        x = frames.permute(0, 3, 1, 2)
        if precision == "int8":  # the uint8 frames are the first convolution's quantised input (scale 1/255)
            return x.contiguous(memory_format=torch.channels_last), 1.0 / UINT8_MAX
        return x.float().div_(255.0).contiguous(memory_format=torch.channels_last), None

    def int8_spatial_for(self, precision: str) -> list:
        """Per SDDCNN block, its two cells' Int8Convolution (precision "int8") or None (float)."""
        if precision != "int8":
            return [(None, None)] * len(self.blocks)
        if not self.int8_spatial:
            raise ValueError("this FastTransNetV2 was built without int8 weights (precision='int8' at construction)")
        return self.int8_spatial

    def window(self, precision: str | None = None, chunk: int | None = None,
               between_blocks: Callable[[], object] | None = None) -> WindowPass:
        """A WindowPass: this network over one window whose frames are fed in order (between_blocks:
        called before each block of each step, as in __call__)."""
        return WindowPass(self, precision or self.precision, chunk or WINDOW_CHUNK, between_blocks)

    def __call__(self, inputs, precision: str | None = None, between_blocks: Callable[[], object] | None = None):
        """uint8 [B, T, 27, 48, 3] -> single-frame transition logits [B, T] (float32).

        `between_blocks`, if given, is called before each SDDCNN block: the shot detector lends a core
        that fell idle to the run under way there (shots.TaskQueue.lend_waiting_threads; the numbers
        do not depend on torch's thread count, tested)."""
        import torch
        import torch.nn.functional as F

        b, t = inputs.shape[:2]
        precision = precision or self.precision
        if precision == "int8" and b > 1:  # activation scales per window: a window's values never depend on its batch
            return torch.cat([self(inputs[i:i + 1], precision, between_blocks) for i in range(b)])
        x, x_scale = self.network_input(inputs.reshape(b * t, TN_H, TN_W, 3), precision)
        int8 = self.int8_spatial_for(precision)
        feats = []
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision in ("bf16", "int8")):
            for (first, second), (q_first, q_second) in zip(self.blocks, int8):
                if between_blocks is not None:
                    between_blocks()
                a = self._ddcnn(x, first, True, b, t, q_first, x_scale)
                z = F.relu(self._ddcnn(a, second, False, b, t, q_second)) + a  # the SDDCNN shortcut
                x, x_scale = F.avg_pool2d(z, 2), None
                feats.append(x.float())
        means = torch.cat([f.mean(dim=(2, 3)).reshape(b, t, -1) for f in feats], -1)  # [B, T, 64 + 128 + 256]
        flat = feats[-1].permute(0, 2, 3, 1).reshape(b, t, -1)  # (H, W, C) order, as the package flattens
        return self.head(inputs, means, flat)

    def head(self, inputs, means, flat):
        """The layers after the convolutions, over a whole window: uint8 inputs [B, T, 27, 48, 3], the
        blocks' per-frame mean features [B, T, 448] and the last block's flattened output [B, T, 4608]
        (float32) -> logits [B, T]. Frame similarity: cosine similarity of the projected means, +-50
        frames; the package's colour-histogram similarity, +-50 frames."""
        import torch
        import torch.nn.functional as F

        net = self.net
        sim_layer = net.frame_sim_layer
        proj = F.normalize(sim_layer.projection(means), p=2, dim=2)
        sims = self._lookup(torch.bmm(proj, proj.transpose(1, 2)), sim_layer.lookup_window)
        h = torch.cat([net.color_hist_layer(inputs), F.relu(sim_layer.fc(sims)), flat], 2)
        h = F.relu(net.fc1(h))
        return net.cls_layer1(h)[..., 0]

    @staticmethod
    def _lookup(sims, window: int):
        """[B, T, T] similarities -> [B, T, window]: row i holds columns i-w/2 .. i+w/2 (zeros outside)."""
        import torch
        import torch.nn.functional as F

        b, t, _ = sims.shape
        half = (window - 1) // 2
        idx = torch.arange(t, device=sims.device).view(t, 1) + torch.arange(window, device=sims.device)
        return torch.gather(F.pad(sims, [half, half]), 2, idx.expand(b, t, window))


class Int8Convolution:
    """A 3x3 convolution (stride 1, padding 1, no bias) as oneDNN uint8 x int8 -> bf16.

    weight [O, C, 3, 3] float -> int8 per output channel. The input is non-negative: float (quantised
    here per call, scale max(x) / 255) or uint8 with its scale given."""

    def __init__(self, weight):
        import torch

        w_scale = (weight.abs().amax(dim=(1, 2, 3)) / INT8_MAX).clamp_min(1e-12).float()  # [O]
        w_int8 = (weight / w_scale.view(-1, 1, 1, 1)).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        self.w_scale, self.w_zero = w_scale, torch.zeros(len(w_scale), dtype=torch.long)
        # The activation scale given to prepack is only a hint; each call passes its own (tested).
        self.packed = torch.ops.onednn.qconv_prepack(w_int8.contiguous(memory_format=torch.channels_last),
                                                     w_scale, 1.0, 0, [1, 1], [1, 1], [1, 1], 1, None)

    @staticmethod
    def quantize(x):
        """Non-negative float [N, C, H, W] -> (uint8 tensor, scale): x ~ scale * q."""
        import torch

        top = float(x.amax())
        if top <= 0.0:
            return torch.zeros_like(x, dtype=torch.uint8), 1.0
        scale = top / UINT8_MAX
        return (x * (1.0 / scale)).round_().clamp_(0, UINT8_MAX).to(torch.uint8), scale

    def __call__(self, x, x_scale: float | None = None):
        """[N, C, H, W] channels-last (uint8 with x_scale, or non-negative float) -> [N, O, H, W] bf16."""
        import torch

        if x_scale is None:
            x, x_scale = self.quantize(x)
        return torch.ops.onednn.qconv2d_pointwise(
            x, x_scale, 0, self.packed, self.w_scale, self.w_zero, None, [1, 1], [1, 1], [1, 1], 1,
            1.0, 0, torch.bfloat16, "none", [], "")


class WindowPass:
    """FastTransNetV2 over one window whose frames arrive in order (`FastTransNetV2.window`): `feed`
    frames as they come, `end()` after the last, then `logits()`. The same function as calling the
    network on the whole window (fp32: equal to 1e-5, tested), computed `chunk` frames at a time, so
    a long window costs per frame what a short one does (one 600-frame call's activations overflow
    the caches: up to 30 % slower per frame here) and a window runs while its frames still decode.

    Only the temporal convolutions see more than one frame. Each cell's reach `HALO` frames each way,
    so a cell's output trails its input by HALO frames: every cell keeps the last 2 * HALO frames of
    its spatial convolution's output for its next step, with HALO zero frames before the window's
    first frame and after its last (the package's Conv3d pads the window so), and every block keeps
    its first cell's outputs until its second cell has caught up with them (the shortcut). The
    layers after the convolutions see the whole window at the end (`FastTransNetV2.head`).

    The steps are fixed `chunk`-frame pieces from the window's start whatever the feeding, so the
    result does not depend on how the frames arrive (in int8, the activations' scale is per step)."""

    def __init__(self, fast: FastTransNetV2, precision: str, chunk: int = WINDOW_CHUNK,
                 between_blocks: Callable[[], object] | None = None):
        self.fast, self.precision, self.chunk = fast, precision, chunk
        self.between_blocks = between_blocks  # see FastTransNetV2.__call__
        self.int8 = fast.int8_spatial_for(precision)
        self.device = fast.blocks[0][0][0].device  # where the weights are (the first spatial convolution's)
        self.inputs: list = []  # every fed frame array, uint8 [m, 27, 48, 3] (the head's colour histograms)
        self.fed = 0  # frames fed
        self.ran = 0  # frames that went through the first cell
        self.ended = False
        self.tails = [[None, None] for _ in fast.blocks]  # per cell: spatial outputs kept for its next step
        self.shortcuts: list[list] = [[] for _ in fast.blocks]  # per block: first-cell outputs its second cell has not reached
        self.means: list[list] = [[] for _ in fast.blocks]  # per block: [m, C] float32 per step
        self.flat: list = []  # the last block's output per step, [m, H * W * C] float32 in (H, W, C) order

    def feed(self, frames) -> None:
        """The window's next frames, uint8 [m, 27, 48, 3] (array or tensor); full steps run now."""
        import torch

        if self.ended:
            raise ValueError("the window has ended")
        if len(frames):
            self.inputs.append(torch.as_tensor(frames).to(self.device))
            self.fed += len(frames)
        while self.fed - self.ran >= self.chunk:
            self._step(self._frames(self.ran, self.ran + self.chunk), last=False)
            self.ran += self.chunk

    def end(self) -> None:
        """The window ends with the frames fed: the rest runs, every cell flushes."""
        if not self.fed:
            raise ValueError("a window needs at least one frame")
        self._step(self._frames(self.ran, self.fed) if self.fed > self.ran else None, last=True)
        self.ran, self.ended = self.fed, True

    def _frames(self, a: int, b: int):
        """Fed frames a .. b of the window, [b - a, 27, 48, 3]."""
        return _joined(_frame_range(self.inputs, a, b))

    def frames(self):
        """Every frame fed, uint8 [fed, 27, 48, 3] (the shot detector's checks rerun parts of them)."""
        return _joined(self.inputs)

    def logits(self):
        """[window] float32 logits, once the window has ended."""
        import torch

        if not self.ended:
            raise ValueError("logits() before end()")
        means = torch.cat([torch.cat(m) for m in self.means], 1)  # [T, 448]
        flat = torch.cat(self.flat)  # [T, 4608]
        return self.fast.head(self.frames()[None], means[None], flat[None])[0]

    def _step(self, frames, last: bool) -> None:
        """Run frames [m, 27, 48, 3] through the convolutions as far as the cells' reach allows;
        `last`: the window ends with them, so every cell flushes."""
        import torch
        import torch.nn.functional as F

        x, x_scale = self.fast.network_input(frames, self.precision) if frames is not None else (None, None)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision in ("bf16", "int8")):
            for j, ((first, second), (q_first, q_second)) in enumerate(zip(self.fast.blocks, self.int8)):
                if self.between_blocks is not None:
                    self.between_blocks()
                a = self._cell(j, 0, x, x_scale, first, q_first, last)
                waiting = self.shortcuts[j]  # first-cell outputs (a list of frame ranges) the second has not reached
                if a is not None:
                    a = F.relu(a)
                    waiting.append(a)
                zb = self._cell(j, 1, a, None, second, q_second, last)
                if zb is None:  # nothing new reaches the next block yet (its cells may still flush)
                    x, x_scale = None, None
                    continue
                m = len(zb)
                z = F.relu(zb)
                at = 0
                for piece in _frame_range(waiting, 0, m):  # the SDDCNN shortcut, added range by range
                    z[at:at + len(piece)] += piece
                    at += len(piece)
                self.shortcuts[j] = _frame_range(waiting, m, sum(len(f) for f in waiting))
                x, x_scale = F.avg_pool2d(z, 2), None
                pooled = x.float()
                self.means[j].append(pooled.mean(dim=(2, 3)))
                if j == len(self.fast.blocks) - 1:
                    self.flat.append(pooled.permute(0, 2, 3, 1).reshape(m, -1))

    def _cell(self, j: int, c: int, x, x_scale, params, int8_spatial, last: bool):
        """Cell c of block j over its new input frames x [m, C, H, W] (or None): its output for every frame
        whose temporal neighbourhood is complete, [m', 4F, H, W] channels-last, or None."""
        import torch
        import torch.nn.functional as F

        spatial, temporal, bias = params
        tail = self.tails[j][c]
        parts = [] if tail is None else [tail]
        if x is not None and len(x):
            ys = F.conv2d(x, spatial, padding=1) if int8_spatial is None else int8_spatial(x, x_scale)
            if tail is None:  # the window's start: zeros before its first frame
                parts.append(ys.new_zeros((HALO, *ys.shape[1:])).contiguous(memory_format=torch.channels_last))
            parts.append(ys)
        if not parts:
            return None
        if last:  # and zeros after its last
            parts.append(parts[-1].new_zeros((HALO, *parts[-1].shape[1:])).contiguous(memory_format=torch.channels_last))
        n = sum(len(p) for p in parts)  # the frames of the (virtual) concatenation of parts
        out_n = n - 2 * HALO
        if out_n <= 0:
            self.tails[j][c] = _joined(parts)
            return None
        _, c8, h, w = parts[0].shape  # [., 4 * 2F, H, W]: the four branches' spatial outputs
        c2 = c8 // 4
        frames = [p.permute(0, 2, 3, 1) for p in parts]  # [k, H, W, 4 * 2F], no copy (channels-last memory)
        outs = []
        for i, (wt, bt, d) in enumerate(zip(temporal, bias, DILATIONS)):
            # This branch's channels of frames HALO - d .. n - HALO + d, gathered into one contiguous
            # [out_n + 2d, H, W, 2F] (the one copy the convolution needs anyway: no concatenation first).
            pieces = [f[..., i * c2:(i + 1) * c2] for f in _frame_range(frames, HALO - d, n - HALO + d)]
            y = _joined(pieces).contiguous()
            y = y.reshape(1, out_n + 2 * d, h * w, c2).permute(0, 3, 1, 2)  # [1, 2F, out_n + 2d, H*W] channels-last
            z = F.conv2d(y, wt, bt.to(y.dtype), dilation=(d, 1))  # [1, F, out_n, H*W]
            outs.append(z.permute(0, 2, 3, 1))  # [1, out_n, H*W, F]
        tail = _frame_range(parts, n - 2 * HALO, n)
        self.tails[j][c] = (torch.cat(tail) if len(tail) > 1 else tail[0].clone()).contiguous(
            memory_format=torch.channels_last)
        return torch.cat(outs, -1).reshape(out_n, h, w, -1).permute(0, 3, 1, 2)


def _joined(pieces: list):
    """Tensors split along dim 0 as one (the piece itself when there is one)."""
    import torch

    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _frame_range(parts: list, a: int, b: int) -> list:
    """Frames a .. b of the concatenation of `parts` (tensors split along dim 0), as views of the parts."""
    out, at = [], 0
    for p in parts:
        lo, hi = max(a, at), min(b, at + len(p))
        if lo < hi:
            out.append(p[lo - at:hi - at])
        at += len(p)
    return out

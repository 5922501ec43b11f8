"""The torch backend: the network run by PyTorch on any device it supports. On CUDA it takes the fast
path: NHWC convolutions, the whole restore step replayed as one CUDA graph per (batch, reference count)
with the profile's K/V bound as static inputs, and optionally torch.compile underneath."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..network import build_nets
from . import Backend, BoundReferences, device_kind


@dataclass
class _CapturedStep:
    graph: torch.cuda.CUDAGraph
    images: torch.Tensor
    noise: torch.Tensor
    layer_inputs: list[torch.Tensor]
    output: torch.Tensor
    bound: BoundReferences  # which profile's K/V the static inputs hold


class TorchBackend(Backend):
    """A Backend running the network with PyTorch: on any device torch has, nothing to build first."""

    name = "torch"
    rank = 30
    ready_reason = "device given"  # it comes first only where a device no faster backend runs on was given
    compile_option = "compile"  # torch.compile under the CUDA graph

    @classmethod
    def usable(cls, device: str) -> tuple:
        if device_kind(device) == "cuda" and not torch.cuda.is_available():
            return False, "no CUDA GPU"
        return True, ""

    def __init__(self, bundle, device="cpu", dtype=torch.float32, cuda_graph=None, compile=False):
        self.device = torch.device(device)
        self.dtype = dtype
        self.restorer_net, self.enroller_net = build_nets(bundle, self.device, dtype)
        on_cuda = self.device.type == "cuda"
        if on_cuda:  # cuDNN's fastest fp16 convolutions are NHWC
            self.restorer_net.to(memory_format=torch.channels_last)
        self.cuda_graph = on_cuda if cuda_graph is None else bool(cuda_graph)
        if self.cuda_graph and not on_cuda:
            raise ValueError("CUDA graphs need a CUDA device")
        self._step = self.restorer_net
        if compile:
            # CUDA graphs are ours (one per shape, inputs bound once), so inductor must not add its own
            self._step = torch.compile(self.restorer_net, mode="max-autotune-no-cudagraphs", dynamic=False)
        self._captured: dict[tuple, _CapturedStep] = {}
        # one memory pool for all captured shapes: replays are sequential and outputs are cloned at once
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None

    @torch.inference_mode()
    def enroll(self, refs: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        return list(self.enroller_net(refs.to(self.device, self.dtype), noise.to(self.device, self.dtype)))

    @torch.inference_mode()
    def restore(self, images: torch.Tensor, noise: torch.Tensor, layer_inputs: list[torch.Tensor]) -> torch.Tensor:
        images = images.to(self.device, self.dtype, non_blocking=True)
        noise = noise.to(self.device, self.dtype, non_blocking=True)
        if not self.cuda_graph:
            return self._step(images, noise, *layer_inputs)
        key = (tuple(images.shape), tuple(tuple(t.shape) for t in layer_inputs))
        with torch.cuda.device(self.device):  # graphs, streams and pools belong to the backend's GPU
            step = self._captured.get(key) or self._capture(key, images, noise, layer_inputs)
            step.images.copy_(images)
            step.noise.copy_(noise)
            if step.bound.changed(layer_inputs):  # a new profile: copy its K/V in once
                for static, value in zip(step.layer_inputs, layer_inputs):
                    static.copy_(value)
            step.graph.replay()
            return step.output.clone()

    def _capture(self, key, images, noise, layer_inputs) -> _CapturedStep:
        static_images = images.clone().contiguous(memory_format=torch.channels_last)
        static_noise, static_inputs = noise.clone(), [t.clone() for t in layer_inputs]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN autotuning, compilation, allocator
            for _ in range(3):
                self._step(static_images, static_noise, *static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=side):
            output = self._step(static_images, static_noise, *static_inputs)
        bound = BoundReferences(len(layer_inputs))
        bound.changed(layer_inputs)  # captured with these values in the static inputs
        step = _CapturedStep(graph, static_images, static_noise, static_inputs, output, bound)
        self._captured[key] = step
        return step

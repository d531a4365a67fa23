"""Numbers read back from the device without stalling it.

``tensor.item()`` on CUDA waits for everything queued on the stream before it returns, so a
training that reads its loss every few steps keeps its queue short and, with other trainings
in flight, stops the host from queuing their steps meanwhile. A :class:`Readout` instead
queues the copy to pinned host memory on the current stream and records an event after it:
:meth:`Readout.ready` asks whether the copy has landed, :meth:`Readout.get` waits for the
copy alone (by then usually long done), never for the steps queued after it. On a CPU the
value is there at once."""
import torch


class Readout:
    """A device tensor on its way to the host."""

    def __init__(self, value: torch.Tensor):
        value = value.detach()
        if value.device.type == "cuda":
            self._host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            self._host.copy_(value, non_blocking=True)
            self._landed = torch.cuda.Event()
            self._landed.record(torch.cuda.current_stream(value.device))  # after the copy, on the value's device
        else:
            self._host, self._landed = value.clone(), None

    def ready(self) -> bool:
        return self._landed is None or self._landed.query()

    def get(self) -> torch.Tensor:
        """The value on the host (waits for the copy if it is still on its way)."""
        if self._landed is not None:
            self._landed.synchronize()
        return self._host

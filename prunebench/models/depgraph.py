"""Channel groups of arbitrary models from torch-pruning's dependency graph
(Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023;
``torch_pruning.DependencyGraph``): the graph is traced once on a forward pass, and
pruning the output channels of one convolution pulls in every layer tied to them
(its BatchNorm, depthwise convolutions, the inputs of the next layers, the other
branches of a residual addition, concatenations).

Each graph group rooted at a convolution is one prunable unit: its name is the root
convolution's module path with dots as underscores (a Hydra key and a parameter name
cannot hold dots), its scores come from the root convolution (and its BatchNorm: the
one the root feeds directly), and removing channels applies the whole group. Groups
that touch a grouped, non-depthwise convolution (whose channels go in whole groups)
or the model's output layer are left unpruned.

:func:`width_counter` counts FLOPs or parameters of any widths from one traced pass:
a convolution's or linear layer's FLOPs scale with the kept fraction of its output
channels times that of its input channels (depthwise: its channels), so the uniform
search needs no rebuilt model per candidate."""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from prunebench.errors import PrunebenchError


def _tp():
    try:
        import torch_pruning
    except ImportError as e:  # an optional extra: say how to get it
        raise PrunebenchError("torchvision models and models of your own are pruned through torch-pruning: pip install "
                              "torch-pruning "
                              "(or pip install prunebench[torchvision])") from e
    return torch_pruning


@dataclass(frozen=True)
class GraphGroup:
    name: str  # root conv path with dots as underscores
    root: str  # module path of the root convolution
    bn: str  # module path of the BatchNorm the root feeds directly, "" if none
    outputs: Tuple[str, ...]  # modules whose output channels the group prunes (root first)
    inputs: Tuple[str, ...]  # modules whose input channels the group prunes
    params: Tuple[str, ...]  # free parameters (not in a module) the group slices, by name
    channels: int


def group_name(path: str) -> str:
    return path.replace(".", "_")


@contextmanager
def _tracing(net: nn.Module):
    """Eval mode (no BatchNorm statistics updated) with autograd on; modes restored after."""
    modes = {m: m.training for m in net.modules()}
    try:
        net.eval()
        with torch.enable_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _output_layers(net: nn.Module, num_classes: int) -> List[nn.Module]:
    """The last convolution or linear layer (the logits), which is never pruned."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[-1:]


def dependency_graph(net: nn.Module, input_size: int, num_classes: int, in_channels: int = 3):
    tp = _tp()
    device = next(net.parameters()).device
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)
    with _tracing(net):
        return tp.DependencyGraph().build_dependency(net, example_inputs=x, verbose=False)


def graph_groups(net: nn.Module, input_size: int, num_classes: int, graph=None,
                 in_channels: int = 3) -> List[GraphGroup]:
    """The prunable groups of ``net``, in module order of their roots."""
    tp = _tp()
    graph = graph or dependency_graph(net, input_size, num_classes, in_channels)
    names = {m: n for n, m in net.named_modules()}
    pnames = {p: n for n, p in net.named_parameters()}
    order = {n: i for i, n in enumerate(names.values())}
    out = []
    with _tracing(net):
        groups = list(graph.get_all_groups(ignored_layers=_output_layers(net, num_classes),
                                           root_module_types=[nn.Conv2d]))
    for group in groups:
        root = group[0].dep.target.module
        outputs, inputs, params, ok = [], [], [], True
        for dep, _ in group:
            target = dep.target.module
            if isinstance(target, nn.Parameter):
                params.append(pnames.get(target, ""))
                continue
            if target not in names:
                continue  # a functional op (add, cat, flatten): no parameters of its own
            if isinstance(target, nn.Conv2d) and 1 < target.groups and not (
                    target.groups == target.in_channels == target.out_channels):
                ok = False  # grouped convolution: channels go in whole groups
            if graph.is_out_channel_pruning_fn(dep.handler) or dep.handler == tp.prune_depthwise_conv_out_channels:
                outputs.append(names[target])
            else:
                inputs.append(names[target])
        if not ok:
            continue
        convs = sorted((o for o in outputs if isinstance(net.get_submodule(o), nn.Conv2d)), key=order.get)
        plain = [c for c in convs if net.get_submodule(c).groups == 1]
        root = net.get_submodule((plain or convs)[0])  # the producing convolution, not a depthwise one after it
        root_node = graph.module2node[root]
        bn = ""
        for node in root_node.outputs:
            if isinstance(node.module, nn.modules.batchnorm._BatchNorm) and node.module in names:
                bn = names[node.module]
                break
        path = names[root]
        outputs = [path] + sorted({o for o in outputs if o != path}, key=order.get)
        out.append(GraphGroup(group_name(path), path, bn, tuple(outputs),
                              tuple(sorted(set(inputs), key=order.get)), tuple(sorted(set(params))),
                              root.out_channels))
    return sorted(out, key=lambda g: order[g.root])


def prune_groups(net: nn.Module, keep: Dict[str, Sequence[int]], input_size: int, num_classes: int,
                 in_channels: int = 3) -> None:
    """Keep, in each named group of ``net``, the channels ``keep`` lists (indices into its current
    channels); in place, through torch-pruning."""
    tp = _tp()
    graph = dependency_graph(net, input_size, num_classes, in_channels)
    by_name = {g.name: g for g in graph_groups(net, input_size, num_classes, graph, in_channels)}
    unknown = sorted(set(keep) - set(by_name))
    if unknown:
        raise PrunebenchError(f"no prunable group {unknown} in this model; its groups: {', '.join(by_name)}")
    with _tracing(net):
        for name, idx in keep.items():
            g = by_name[name]
            kept = set(int(i) for i in (idx.tolist() if torch.is_tensor(idx) else idx))
            removed = [i for i in range(g.channels) if i not in kept]
            if not removed:
                continue
            if len(removed) == g.channels:
                raise PrunebenchError(f"group {name} would lose all {g.channels} channels; keep at least one")
            root = net.get_submodule(g.root)
            graph.get_pruning_group(root, tp.prune_conv_out_channels, removed).prune()


def width_counter(net: nn.Module, input_shape: Sequence[int], groups: List[GraphGroup],
                  measure: str = "flops") -> Callable[[Dict[str, int]], int]:
    """A function from group widths to the FLOPs (of one image of ``input_shape``) or the
    parameters of ``net`` narrowed to them; ``net`` itself is run once and left as it is."""
    full = {g.name: g.channels for g in groups}
    out_of: Dict[str, str] = {}
    in_of: Dict[str, str] = {}
    param_of: Dict[str, str] = {}
    for g in groups:
        for path in g.outputs:
            out_of[path] = g.name
        for path in g.inputs:
            in_of[path] = g.name
        for name in g.params:
            param_of[name] = g.name
    terms: List[Tuple[float, Optional[str], Optional[str]]] = []  # (count at full width, out group, in group)
    modules = dict(net.named_modules())
    if measure == "flops":
        flops: Dict[str, float] = {}

        def hook(name):
            def fn(module, inputs, output):
                if isinstance(module, nn.Conv2d):
                    per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                else:
                    per_out = module.in_features
                flops[name] = flops.get(name, 0.0) + 2.0 * output.numel() * per_out
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
        device = next(net.parameters()).device
        try:
            with _tracing(net), torch.no_grad():
                net(torch.zeros(1, *input_shape, device=device))
        finally:
            for h in handles:
                h.remove()
        for name, f in flops.items():
            m = modules[name]
            depthwise = isinstance(m, nn.Conv2d) and m.groups > 1
            if depthwise:  # channels in = channels out: one group, one factor
                terms.append((f, out_of.get(name) or in_of.get(name), None))
            else:
                terms.append((f, out_of.get(name), in_of.get(name)))
    elif measure == "params":
        owner = {}
        for mname, m in modules.items():
            for pname, _ in m.named_parameters(recurse=False):
                owner[f"{mname}.{pname}" if mname else pname] = (mname, pname)
        for name, p in net.named_parameters():
            if name in param_of:
                terms.append((float(p.numel()), param_of[name], None))
                continue
            mname, pname = owner[name]
            m = modules[mname]
            depthwise = isinstance(m, nn.Conv2d) and m.groups > 1
            sliced_in = pname == "weight" and isinstance(m, (nn.Conv2d, nn.Linear)) and not depthwise
            group = out_of.get(mname) or (in_of.get(mname) if depthwise else None)
            terms.append((float(p.numel()), group, in_of.get(mname) if sliced_in else None))
    else:
        raise PrunebenchError(f"measure must be 'flops' or 'params', got {measure!r}")

    def count(widths: Dict[str, int]) -> int:
        def r(g):
            return 1.0 if g is None else widths.get(g, full[g]) / full[g]
        return int(round(sum(c * r(o) * r(i) for c, o, i in terms)))
    return count


def group_counter(model: nn.Module, input_shape: Sequence[int], measure: str = "flops"):
    """:func:`width_counter` for a model that lists its own channel groups (each group's
    convolution and BatchNorm are its outputs, its consumers the inputs it narrows)."""
    groups = [GraphGroup(g.name, g.conv, g.bn, (g.conv,) + ((g.bn,) if g.bn else ()), tuple(g.consumers), (),
                         model.get_submodule(g.conv).out_channels) for g in model.channel_groups()]
    return width_counter(model, input_shape, groups, measure)

"""tfcnn's modules import downward only: no import cycle, counting the imports inside functions too.

Read from the source with `ast` (nothing is imported, so no TensorFlow): an import hidden in a function to
dodge a cycle is still an edge here.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfcnn"
# Modules that must start without TensorFlow (the dispatcher, the CLIs' --help, predict on ONNX/TFLite, the shipped
# models' checks): none of their module-level imports may reach Keras or TensorFlow.
LIGHT = ("tfcnn", "tfcnn.cli", "tfcnn.config", "tfcnn.errors", "tfcnn.evaluate", "tfcnn.export", "tfcnn.meta",
         "tfcnn.predict", "tfcnn.pretrained", "tfcnn.runfiles", "tfcnn.ship")
HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx"}


def _modules():
    return {"tfcnn" if p.stem == "__init__" else f"tfcnn.{p.stem}": p for p in sorted(PACKAGE.glob("*.py"))}


def _imports(path, module, top_level_only=False):
    """(imported name, line) of every import statement in `path`; with top_level_only, those run at import."""
    tree = ast.parse(path.read_text(), str(path))
    package = "tfcnn" if module == "tfcnn" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]  # a module or a name in one
    return found


def _edges(top_level_only=False):
    """{module: {imported tfcnn module: first line}}, names imported from a module counting as that module."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for name, line in _imports(path, module, top_level_only):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.setdefault(name, line)
    return graph


def _cycles(graph):
    """One cycle (a list of modules, first == last) per strongly connected component that has one (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_shortest_cycle(graph, component) for component in components]


def _shortest_cycle(graph, component):
    """The shortest cycle through the component's first module, breadth first."""
    start = min(component)
    parent, frontier = {start: None}, [start]
    for node in frontier:
        for nxt in sorted(graph[node]):
            if nxt == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if nxt in component and nxt not in parent:
                parent[nxt] = node
                frontier.append(nxt)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _describe(graph, cycle):
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def _component(graph, module):
    """Every module that both reaches `module` and is reached from it."""
    def reach(start, edges):
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += edges(node)
        return seen

    return reach(module, lambda m: graph[m]) & reach(module, lambda m: [k for k, v in graph.items() if m in v])


def test_no_import_cycles():
    graph = _edges()
    cycles = _cycles(graph)
    assert not cycles, "import cycles (imports inside functions count; move the shared code down a layer):\n" + \
        "\n".join(f"{_describe(graph, cycle)}  (cycles join {', '.join(sorted(_component(graph, cycle[0])))})"
                  for cycle in cycles)


def test_the_cycle_finder_names_a_cycle():
    graph = {"tfcnn.a": {"tfcnn.b": 3}, "tfcnn.b": {"tfcnn.c": 5}, "tfcnn.c": {"tfcnn.a": 7}, "tfcnn.d": {"tfcnn.a": 1}}
    (cycle,) = _cycles(graph)
    assert _describe(graph, cycle) == "tfcnn.a (line 3) -> tfcnn.b (line 5) -> tfcnn.c (line 7) -> tfcnn.a"


def test_light_modules_import_no_tensorflow_at_import_time():
    modules = _modules()
    graph = _edges(top_level_only=True)
    for light in LIGHT:
        reached, todo = set(), [light]
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo += graph[module]
        heavy = {(module, name.split(".")[0]) for module in reached
                 for name, _ in _imports(modules[module], module, top_level_only=True) if name.split(".")[0] in HEAVY}
        assert not heavy, f"{light} imports {sorted(heavy)} at import time; import it inside the function that needs it"
